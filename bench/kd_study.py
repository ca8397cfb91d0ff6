"""The paper's KD protocol at CPU scale: a teacher (PaiNN or GemNet-OC) → a smaller PaiNN student, several seeds.

Generates EMT-relaxed d1M data (train and a separate validation set from another seed; EMT labels are the reference),
trains the teacher on it, labels the training set with the teacher's outputs and the features the chosen KD losses
need (``augkd label``: energies, forces, ``atom_energy``, ``node``, ``vector``, ``edge2node``/``edge_vector``), then
trains students with the same steps: the baseline (no KD) and one per KD configuration × λ multiplier × seed.

KD configurations (``--kd``, comma list; ``+`` combines losses in one run): vanilla1 (teacher energy and forces),
vanilla2 (per-atom energies), n2n (node features), e2n (teacher edge features summed onto atoms: needs an
edge-feature teacher, GemNet-OC), v2v (vector features: a PaiNN teacher's own, a GemNet-OC teacher's Σ u_ij·x_F),
e.g. ``n2n+e2n``, ``n2n+vanilla1``. Every KD target comes from the cached teacher outputs (``--teacher cached``):
the same numbers an online teacher gives on the same positions, without a teacher pass per step. A configuration the
teacher cannot serve (e2n with a PaiNN teacher) is skipped and listed.

λ (``--lambdas``, multipliers m, e.g. 0.3,1,3 — a decade): Table 8's values were picked so that λ·L_KD starts near
the tuned base loss (their feature scales are not ours), so each term's λ is that rule applied here — ``auto`` with
fraction ``--auto-fraction`` × m (λ = f·m·L0/L_KD on the first batch; ``resolved.kd_lambdas`` in each run's
config.json holds the number) — except vanilla(1), whose loss is in L0's own units: λ = m × Table 8's 1.
Table 8's values for the pair are printed beside for reference.

Students are scored on the validation set with their final EMA weights (``checkpoints/final.pt``: no checkpoint
selection on the set they are scored on), energies on each run's own element references (``augkd evaluate``'s
comparison: the trainer fits per-source references, and the bare network predicts E − Σ n_Z c_Z). Gap closed per
seed against the baseline of the same seed; mean ± sample std over ``--seeds``. "Both gaps at once": the
configuration with the largest min(gap E, gap F) (means over seeds).

Prints the paper-style table (mean ± sample std), then ONE JSON line (also written to ``--out/results.json``;
the table to ``--out/table.md``).

    python bench/kd_study.py [--steps 400] [--teacher-steps 800] [--systems 40] [--out runs/kd-study]
    python bench/kd_study.py --teacher-model gemnet-oc-tiny --kd n2n,e2n --systems 32 --teacher-steps 400 \
        --steps 300 --out runs/kd-study-gemnet
    python bench/kd_study.py --protocol --out runs/kd-protocol        # 3 seeds, every loss and combination, λ sweep
    python bench/kd_study.py --protocol --teacher-model gemnet-oc-tiny --out runs/kd-protocol-gemnet

``--protocol`` sets (unless given): --seeds 0,1,2, --kd vanilla1,vanilla2,n2n,e2n,v2v,n2n+e2n,n2n+vanilla1,
--lambdas 0.3,1,3, --systems 60, --teacher-steps 2000. Sizes default to what runs in ~15 minutes on 2 CPU cores
without it (scaled-down models: PaiNN teacher 64 hidden × 3 layers, GemNet-OC teacher: the tiny preset with 32/32
atom/edge embeddings, student PaiNN 16 × 2); pass --teacher-model painn (or gemnet-oc) --student-model painn-small
for the paper's sizes on a GPU. Rerunning with the same --out reuses data and resumes (or re-exports) runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.modules.setdefault("nvalchemiops", None)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's augkd, not an installed one

LOSSES = ("vanilla1", "vanilla2", "n2n", "e2n", "v2v")
#: scaled-down teachers for the CPU study (overrides of the tiny presets)
TINY_TEACHERS = {
    "painn-tiny": {"hidden_channels": 64, "num_layers": 3},
    "gemnet-oc-tiny": {"emb_size_atom": 32, "emb_size_edge": 32},
}
#: Table 8 (OC20), for the printout: teacher family → student family → loss → λ
TABLE8 = {
    ("painn", "painn"): {"vanilla1": 1, "vanilla2": 200, "n2n": 100, "v2v": 1000},
    ("gemnet", "painn"): {"vanilla1": 1.0, "vanilla2": 500, "n2n": 10000, "e2n": 1000, "v2v": 50000},
    ("painn", "schnet"): {"vanilla1": 0.1, "vanilla2": 0.1, "n2n": 1000},
}
PROTOCOL = {"seeds": "0,1,2", "kd": "vanilla1,vanilla2,n2n,e2n,v2v,n2n+e2n,n2n+vanilla1", "lambdas": "0.3,1,3",
            "systems": 60, "teacher_steps": 2000}
DEFAULTS = {"seeds": None, "kd": "n2n,vanilla1", "lambdas": "1", "systems": 40, "teacher_steps": 800}
METRICS = ("energy_mae", "force_mae", "force_cos", "efwt")


def family(model: str) -> str:
    return "gemnet" if model.startswith("gemnet") else model.split("-")[0]


def teacher_feature(loss: str, shapes: dict) -> str | None:
    """The cached teacher output loss ``loss`` regresses onto, given the teacher's features; None: not served."""
    if loss == "vanilla1":
        return ""  # energies and forces: always cached
    if loss == "vanilla2":
        return "atom_energy"
    if loss == "n2n":
        return "node" if "node" in shapes else None
    if loss == "e2n":
        return "edge2node" if "edge2node" in shapes or "edge" in shapes else None
    if loss == "v2v":
        return "vector" if "vector" in shapes else "edge_vector" if "edge" in shapes or "edge_vector" in shapes else None
    raise ValueError(loss)


def kd_terms(losses: list[str], multiplier: float, fraction: float) -> list[dict]:
    """KD loss terms of one configuration at λ multiplier m (see the module docstring)."""
    terms = []
    for loss in losses:
        if loss == "vanilla1":
            terms.append({"name": loss, "lambda": 1.0 * multiplier})
        else:
            terms.append({"name": loss, "lambda": "auto", "fraction": fraction * multiplier})
    return terms


def mean_std(values: list[float]) -> dict:
    """Mean and sample standard deviation (n − 1; 0 for one value) of the finite values."""
    import numpy as np

    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std, "n": len(values)}


def summarize(scores: dict[str, dict[int, dict]], teacher: dict) -> dict:
    """Per configuration: metrics and gap closed (E, F per seed against that seed's baseline), mean ± std; and the
    configuration with the largest min(mean gap E, mean gap F)."""
    from augkd.train.metrics import gap_closed

    baseline = scores["student"]
    table = {}
    for name, seeds in scores.items():
        row = {m: mean_std([s[m] for s in seeds.values()]) for m in METRICS}
        row["per_seed"] = {str(seed): {m: s[m] for m in METRICS} for seed, s in seeds.items()}
        if name != "student":
            for short, metric in (("energy", "energy_mae"), ("force", "force_mae")):
                closed = [gap_closed(baseline[seed][metric], s[metric], teacher[metric])
                          for seed, s in seeds.items() if seed in baseline]
                row[f"gap_{short}_pct"] = {**mean_std(closed), "per_seed": closed}
        table[name] = row
    both = {n: min(r["gap_energy_pct"]["mean"], r["gap_force_pct"]["mean"]) for n, r in table.items()
            if n != "student" and r["gap_energy_pct"]["mean"] is not None and r["gap_force_pct"]["mean"] is not None}
    best = max(both, key=both.get) if both else None
    return {"table": table, "best_both": None if best is None else {
        "config": best, "min_gap_pct": both[best], "gap_energy_pct": table[best]["gap_energy_pct"],
        "gap_force_pct": table[best]["gap_force_pct"],
        "target": "≥ 60 % of the energy gap and ≥ 20 % of the force gap at once (mean over seeds)",
        "reached": table[best]["gap_energy_pct"]["mean"] >= 60 and table[best]["gap_force_pct"]["mean"] >= 20}}


def format_stat(stat: dict, digits: int) -> str:
    """"mean ± std" (just the mean for one seed; "–" for none)."""
    if stat["mean"] is None:
        return "–"
    return f"{stat['mean']:.{digits}f}" + (f" ± {stat['std']:.{digits}f}" if stat["n"] > 1 else "")


COLUMNS = ("run", "E MAE meV", "F MAE meV/Å", "F cos", "EFwT %", "gap E %", "gap F %", "λ")


def table_rows(table: dict, teacher: dict, lambdas: dict) -> list[list[str]]:
    rows = [["teacher", f"{teacher['energy_mae']:.1f}", f"{teacher['force_mae']:.1f}", f"{teacher['force_cos']:.4f}",
             f"{teacher['efwt']:.2f}", "", "", ""]]
    for name, row in table.items():
        gaps = ["", ""] if name == "student" else [format_stat(row["gap_energy_pct"], 1),
                                                   format_stat(row["gap_force_pct"], 1)]
        rows.append([name, format_stat(row["energy_mae"], 1), format_stat(row["force_mae"], 1),
                     format_stat(row["force_cos"], 4), format_stat(row["efwt"], 2), *gaps, lambdas.get(name, "")])
    return rows


def print_table(rows: list[list[str]], columns: tuple = COLUMNS, first: int = 30, width: int = 17) -> None:
    """The table as aligned text: the first column left-aligned, the rest right-aligned (a wider cell keeps a space)."""
    def line(cells):
        return "".join(f"{c:<{first}}" if i == 0 else f" {c:>{width - 1}}" for i, c in enumerate(cells))

    print("\n".join([line(columns), "-" * len(line(columns)), *map(line, rows)]))


def markdown_table(rows: list[list[str]], columns: tuple = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows]) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/kd-study"))
    parser.add_argument("--protocol", action="store_true", help="the paper's protocol: 3 seeds, every loss, λ sweep")
    parser.add_argument("--systems", type=int, help="training systems (default 40; --protocol 60)")
    parser.add_argument("--steps", type=int, default=400, help="student optimizer steps")
    parser.add_argument("--teacher-steps", type=int, help="teacher optimizer steps (default 800; --protocol 2000)")
    parser.add_argument("--teacher-model", default="painn-tiny")
    parser.add_argument("--student-model", default="painn-tiny")
    parser.add_argument("--kd", help="KD configurations, comma list of losses or '+'-combinations "
                                     f"({', '.join(LOSSES)}; default n2n,vanilla1)")
    parser.add_argument("--lambdas", help="λ multipliers (see the docstring; default 1; --protocol 0.3,1,3)")
    parser.add_argument("--auto-fraction", type=float, default=0.3,
                        help="λ·L_KD at the start as a fraction of L0, at multiplier 1 (default 0.3)")
    parser.add_argument("--seed", type=int, default=0, help="the student seed when --seeds is not given")
    parser.add_argument("--seeds", help="student seeds, comma list (--protocol: 0,1,2); data and teacher keep theirs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared 2-core machine)")
    args = parser.parse_args(argv)
    for key, value in (PROTOCOL if args.protocol else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    seeds = [int(s) for s in (args.seeds or str(args.seed)).split(",") if s != ""]
    configs = [[loss for loss in item.split("+") if loss] for item in args.kd.split(",") if item]
    unknown = sorted({loss for c in configs for loss in c} - set(LOSSES))
    if unknown or not configs:
        parser.error(f"--kd takes {', '.join(LOSSES)} and '+'-combinations; got {args.kd}")
    multipliers = [float(m) for m in args.lambdas.split(",") if m]

    import torch

    from augkd.cli import main as augkd
    from augkd.config import compose
    from augkd.teachers.checkpoint import CheckpointTeacher
    from augkd.train.data import FrameDataset
    from augkd.train.evaluate import evaluate_checkpoint
    from augkd.train.trainer import TrainConfig, Trainer

    torch.set_num_threads(args.threads)
    started = time.time()
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

    def run(name: str, model: str, steps: int, overrides: dict, seed: int, **sections) -> Path:
        final = out / name / "checkpoints" / "final.pt"
        values = compose("train", "default", [f"steps={steps}", "batch_size=8", "eval_every=100",
                                              "checkpoint_every=100", "optim.lr=2e-3", "optim.ema_decay=0.99",
                                              f"seed={seed}", f"model.name={model}"])
        values["data"]["train"], values["data"]["val"] = [str(train)], [str(val)]
        values["model"]["overrides"] = overrides
        for key, value in sections.items():
            values[key].update(value)
        Trainer(TrainConfig.from_dict(values), out / name).fit(progress=False)
        return final

    teacher_overrides = TINY_TEACHERS.get(args.teacher_model, {}) if tiny else {}
    teacher = run("teacher", args.teacher_model, args.teacher_steps, teacher_overrides, seed=0)
    shapes = CheckpointTeacher(str(teacher), device="cpu").feature_shapes()
    served, skipped = [], {}
    for losses in configs:
        missing = [loss for loss in losses if teacher_feature(loss, shapes) is None]
        name = "+".join(losses)
        if missing:
            skipped[name] = f"teacher {args.teacher_model} has no features for {', '.join(missing)}"
        else:
            served.append(losses)
    # one labelled set with every output any loss can use from this teacher, whatever --kd asks this time
    features = sorted({teacher_feature(loss, shapes) for loss in LOSSES} - {"", None})
    labelled = out / "data-train-labelled-all"
    if served and not (labelled / "manifest.json").exists():
        assert augkd(["label", str(train), "--teacher", f"ckpt:{teacher}", "--features", ",".join(features) or "node",
                      "--out", str(labelled), "--quiet", "--threads", str(args.threads)]) == 0
    student = {"hidden_channels": 16, "num_layers": 2} if args.student_model.endswith("-tiny") else {}
    val_set = FrameDataset([str(val)])

    def scores(path: Path) -> dict:  # energies on the run's own element references, as `augkd evaluate` compares them
        return {k: float(v) for k, v in evaluate_checkpoint(path, val_set)[0].items() if k in METRICS}

    results: dict[str, dict[int, dict]] = {"student": {}}
    lambdas: dict[str, str] = {}
    for seed in seeds:
        suffix = "" if seed == 0 else f"-s{seed}"  # seed 0 keeps the run names of the one-seed study
        results["student"][seed] = scores(run("student" + suffix, args.student_model, args.steps, student, seed))
        for losses in served:
            for m in multipliers:
                name = "+".join(losses) + ("" if m == 1 else f"x{m:g}")
                kd = {"losses": kd_terms(losses, m, args.auto_fraction), "auto_lambda": args.auto_fraction}
                path = run(name + suffix, args.student_model, args.steps, student, seed,
                           data={"train": [str(labelled)], "val": [str(val)]},
                           teacher={"mode": "cached", "spec": None, "kwargs": {}}, kd=kd)
                results.setdefault(name, {})[seed] = scores(path)
                config = json.loads((out / (name + suffix) / "config.json").read_text())
                chosen = (config.get("resolved") or {}).get("kd_lambdas") or {}
                lambdas.setdefault(name, ", ".join(f"{k} {v:.3g}" for k, v in chosen.items()))
    teacher_scores = scores(teacher)
    summary = summarize(results, teacher_scores)
    pair = (family(args.teacher_model), family(args.student_model))
    print(f"validation set: {len(val_set)} rows; students: {args.steps} steps, seeds {seeds} (mean ± std); "
          f"final EMA weights. λ: auto × multiplier (vanilla1: multiplier × 1); Table 8 {pair[0]}→{pair[1]}: "
          f"{TABLE8.get(pair, {})}")
    rows = table_rows(summary["table"], teacher_scores, lambdas)
    print_table(rows)
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    result = {
        "bench": "kd_study", "teacher_model": args.teacher_model, "student_model": args.student_model,
        "systems": args.systems, "steps": args.steps, "teacher_steps": args.teacher_steps, "seeds": seeds,
        "lambda_multipliers": multipliers, "auto_fraction": args.auto_fraction, "cached_features": features,
        "table8_lambdas": TABLE8.get(pair, {}), "resolved_lambdas_seed0": lambdas, "teacher": teacher_scores,
        "configs": summary["table"], "best_both_gaps": summary["best_both"], "skipped": skipped,
        "wall_s": round(time.time() - started, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "table.md").write_text(markdown_table(rows))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
