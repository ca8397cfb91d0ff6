"""A small KD study on CPU: a teacher (PaiNN or GemNet-OC) → student PaiNN (smaller), baseline vs KD students.

Generates EMT-relaxed d1M data (train and a separate validation set from another seed), trains the teacher, then
students with the same seed and steps: no KD, and one per ``--kd`` loss: n2n (cached teacher node features), e2n
(cached teacher edge features summed onto atoms, ``edge2node``: needs an edge-feature teacher such as GemNet-OC),
vanilla(1) (online teacher). Prints the paper-style table with gap closed (%), then ONE JSON line with all metrics.

    python bench/kd_study.py [--steps 400] [--teacher-steps 800] [--systems 40] [--out runs/kd-study]
    python bench/kd_study.py --teacher-model gemnet-oc-tiny --kd n2n,e2n --systems 32 --teacher-steps 400 \
        --steps 300 --out runs/kd-study-gemnet

Sizes default to what runs in ~15 minutes on 2 CPU cores (scaled-down models: PaiNN teacher 64 hidden × 3 layers,
GemNet-OC teacher: the tiny preset with 32/32 atom/edge embeddings, student PaiNN 16 × 2); pass
--teacher-model painn (or gemnet-oc) --student-model painn-small for the paper's sizes on a GPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.modules.setdefault("nvalchemiops", None)

KD_KINDS = ("n2n", "e2n", "vanilla1")
#: the cached teacher feature each KD loss regresses onto
CACHED_FEATURE = {"n2n": "node", "e2n": "edge2node"}
#: scaled-down teachers for the CPU study (overrides of the tiny presets)
TINY_TEACHERS = {
    "painn-tiny": {"hidden_channels": 64, "num_layers": 3},
    "gemnet-oc-tiny": {"emb_size_atom": 32, "emb_size_edge": 32},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/kd-study"))
    parser.add_argument("--systems", type=int, default=40)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--teacher-steps", type=int, default=800)
    parser.add_argument("--teacher-model", default="painn-tiny")
    parser.add_argument("--student-model", default="painn-tiny")
    parser.add_argument("--kd", default="n2n,vanilla1", help="KD students: comma-separated n2n, e2n, vanilla1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    kinds = [kind for kind in args.kd.split(",") if kind]
    if set(kinds) - set(KD_KINDS):
        parser.error(f"--kd takes {', '.join(KD_KINDS)}; got {args.kd}")

    from augkd.cli import main as augkd
    from augkd.config import compose
    from augkd.train.evaluate import evaluate_checkpoints
    from augkd.train.trainer import TrainConfig, Trainer

    out = args.out
    recipe = ["--teacher", "emt", "--elements", "Cu,Pt,O,H,C,N", "--max-atoms", "60", "--steps", "60",
              "--frames-fraction", "0.3", "--keep-final", "--quiet", "systems_sampler.max_miller=1",
              "filters.drop_anomalies=[desorbed,intercalated]"]  # EMT dissociates most adsorbates: keep those
    train, val = out / "data-train", out / "data-val"
    for path, seed, systems in ((train, 1, args.systems), (val, 2, max(6, args.systems // 4))):
        if not (path / "manifest.json").exists():
            assert augkd(["generate", "d1M", "--out", str(path), "--systems", str(systems), "--seed", str(seed),
                          "--shards", "2", *recipe]) == 0
    tiny = args.teacher_model.endswith("-tiny")

    def run(name: str, model: str, steps: int, overrides: dict, **sections) -> Path:
        values = compose("train", "default", [f"steps={steps}", "batch_size=8", "eval_every=100",
                                              "checkpoint_every=100", "optim.lr=2e-3", "optim.ema_decay=0.99",
                                              f"seed={args.seed}", f"model.name={model}"])
        values["data"]["train"], values["data"]["val"] = [str(train)], [str(val)]
        values["model"]["overrides"] = overrides
        for key, value in sections.items():
            values[key].update(value)
        Trainer(TrainConfig.from_dict(values), out / name).fit(progress=False)
        return out / name / "checkpoints" / "best.pt"

    teacher_overrides = TINY_TEACHERS.get(args.teacher_model, {}) if tiny else {}
    teacher = run("teacher", args.teacher_model, args.teacher_steps, teacher_overrides)
    features = [CACHED_FEATURE[kind] for kind in kinds if kind in CACHED_FEATURE]
    labelled = out / "data-train-labelled"
    if features and not (labelled / "manifest.json").exists():
        assert augkd(["label", str(train), "--teacher", f"ckpt:{teacher}", "--features", ",".join(features),
                      "--out", str(labelled), "--quiet"]) == 0
    student = {"hidden_channels": 16, "num_layers": 2} if args.student_model.endswith("-tiny") else {}
    checkpoints = {"teacher": teacher, "student": run("student", args.student_model, args.steps, student)}
    for kind in kinds:
        if kind in CACHED_FEATURE:
            kd = {"losses": [{"name": kind, "lambda": "auto", "fraction": 0.3}], "auto_lambda": 0.3}
            checkpoints[kind] = run(kind, args.student_model, args.steps, student,
                                    data={"train": [str(labelled)], "val": [str(val)]},
                                    teacher={"mode": "cached", "spec": None, "kwargs": {}}, kd=kd)
        else:
            checkpoints[kind] = run(kind, args.student_model, args.steps, student,
                                    teacher={"mode": "online", "spec": f"ckpt:{teacher}", "kwargs": {}},
                                    kd={"losses": [{"name": kind, "lambda": 1.0}], "auto_lambda": None})
    pairs = [f"{name}={path}" for name, path in checkpoints.items()]
    print(evaluate_checkpoints(pairs, [str(val)], compare=("student", "teacher")))
    print(evaluate_checkpoints(pairs, [str(val)], as_json=True))


if __name__ == "__main__":
    main()
