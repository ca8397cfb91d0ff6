"""Does synthetic teacher data help a student trained on a small reference set? α_target × r_s/dft on CPU.

The setting, scaled down from the paper's (OC20 DFT + d1M from a GemNet-OC teacher):
- reference ("DFT") data: EMT-relaxed adsorbate–slab frames labelled by EMT (the ground truth here), origin ``dft``;
  a training set and a held-out set drawn with other seeds;
- teacher: a PaiNN trained on the reference training set only, so it is *not* the ground truth;
- synthetic data (origin ``synthetic``), labelled by that teacher, so their labels carry its errors:
  ``--synthetic-structures teacher`` (default, the paper's d1M pipeline): ``augkd generate d1M --teacher
  ckpt:<teacher>``, new systems relaxed *and* labelled by the teacher; ``--synthetic-structures emt``: new systems
  relaxed by EMT (in-distribution structures), then labelled by the teacher (label noise without the teacher's
  own trajectories);
- students (a smaller PaiNN, same seeds and steps): reference data alone, and reference + synthetic at each α_target
  and r_s/dft; every model is scored on the held-out reference set (EMA weights at the last step, no selection).
  The table also gives how wrong the synthetic labels are: the teacher's labels against EMT on the same structures.

    python bench/mixer_study.py [--out runs/mixer-study] [--steps 200] [--alphas 0.25,0.5] [--ratios 1,0.3]

Defaults (teacher PaiNN 32×3, student PaiNN 16×2, ~150 reference rows) fit in ~12 minutes on 2 shared CPU cores.

Prints the table, then ONE JSON line with every figure. Datasets and the teacher are reused if ``--out`` has them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.modules.setdefault("nvalchemiops", None)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's augkd, not an installed one

RECIPE = ["--elements", "Cu,Pt,O,H,C,N", "--max-atoms", "60", "--steps", "40", "--fmax", "0.05",
          "--frames-fraction", "0.3", "--keep-final", "--quiet", "systems_sampler.max_miller=1",
          "filters.drop_anomalies=[desorbed,intercalated]"]  # EMT dissociates most adsorbates: keep those


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/mixer-study"))
    parser.add_argument("--systems", type=int, default=12, help="reference training systems")
    parser.add_argument("--test-systems", type=int, default=8, help="held-out reference systems")
    parser.add_argument("--synthetic-systems", type=int, default=24, help="systems the teacher relaxes and labels")
    parser.add_argument("--teacher-steps", type=int, default=400)
    parser.add_argument("--steps", type=int, default=200, help="student optimizer steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--alphas", default="0.25,0.5", help="α_target values (synthetic share of the draws)")
    parser.add_argument("--ratios", default="1,0.3", help="r_s/dft values (loss weight of synthetic vs dft samples)")
    parser.add_argument("--synthetic-structures", choices=("teacher", "emt"), default="teacher",
                        help="who relaxes the synthetic systems (the teacher always labels them)")
    parser.add_argument("--seeds", default="0", help="student seeds, e.g. 0,1,2 (the teacher and data keep theirs)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine more threads thrash, 10x slower measured)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from augkd.cli import main as augkd
    from augkd.config import compose
    from augkd.io.dataset import load_manifest
    from augkd.models.checkpoint import load_model
    from augkd.train.data import FrameDataset
    from augkd.train.evaluate import evaluate_model
    from augkd.train.trainer import TrainConfig, Trainer

    torch.set_num_threads(args.threads)
    out = args.out
    started = time.time()
    reference, test = out / "reference", out / "reference-test"
    synthetic = out / ("synthetic" if args.synthetic_structures == "teacher" else "synthetic-emt-relaxed")

    def generate(path: Path, seed: int, systems: int, teacher: str, origin: str) -> None:
        if not (path / "manifest.json").exists():
            assert augkd(["generate", "d1M", "--out", str(path), "--systems", str(systems), "--seed", str(seed),
                          "--shards", "1", "--teacher", teacher, f"origin={origin}", *RECIPE]) == 0

    generate(reference, 1, args.systems, "emt", "dft")
    generate(test, 2, args.test_systems, "emt", "dft")

    def train(name: str, model: dict, steps: int, lr: float, seed: int, **mixer) -> tuple[Path, float]:
        values = compose("train", "default", [f"steps={steps}", f"batch_size={args.batch_size}",
                                              f"checkpoint_every={steps}", f"optim.lr={lr}", "optim.ema_decay=0.99",
                                              f"seed={seed}", "model.name=painn-tiny"])
        values["data"]["train"] = [str(reference)]
        values["model"]["overrides"] = model
        if mixer:
            values["data"]["synthetic"] = [str(synthetic)]
            values["mixer"].update(mixer)
        final = out / name / "checkpoints" / "final.pt"
        clock = time.time()
        if not final.exists():
            Trainer(TrainConfig.from_dict(values), out / name).fit(progress=False)
        return final, time.time() - clock

    teacher, _ = train("teacher", {"hidden_channels": 32, "num_layers": 3}, args.teacher_steps, 3e-3, seed=0)
    if args.synthetic_structures == "teacher":
        generate(synthetic, 3, args.synthetic_systems, f"ckpt:{teacher.resolve()}", "synthetic")
    else:
        generate(out / "emt-structures", 3, args.synthetic_systems, "emt", "synthetic")
        relabel(out / "emt-structures", synthetic, teacher)

    student = {"hidden_channels": 16, "num_layers": 2}
    seeds = [int(x) for x in args.seeds.split(",")]
    mixtures = {"reference only": {}}
    for alpha in [float(a) for a in args.alphas.split(",")]:
        for r in [float(x) for x in args.ratios.split(",")]:
            mixtures[f"α={alpha:g} r={r:g}"] = {"alpha_target": alpha, "r_sdft": r}
    test_set = FrameDataset([str(test)])
    metrics = ("energy_mae", "force_mae", "force_cos")
    results: dict[str, dict] = {"teacher": {**{k: [evaluate_model(load_model(teacher)[0], test_set)[k]]
                                               for k in metrics}, "train_seconds": []}}
    for name, mixer in mixtures.items():
        tag = "reference" if not mixer else f"a{mixer['alpha_target']:g}-r{mixer['r_sdft']:g}"
        tag += "" if not mixer or args.synthetic_structures == "teacher" else "-emtrelaxed"
        results[name] = {k: [] for k in (*metrics, "train_seconds")}
        for seed in seeds:
            path, seconds = train(f"student-{tag}-s{seed}", student, args.steps, 2e-3, seed, **mixer)
            scores = evaluate_model(load_model(path)[0], test_set, args.batch_size)
            for k in metrics:
                results[name][k].append(scores[k])
            results[name]["train_seconds"].append(seconds)

    sizes = {"reference_rows": load_manifest(reference)["totals"]["rows"], "test_rows": len(test_set),
             "synthetic_rows": load_manifest(synthetic)["totals"]["rows"]}
    label_error = synthetic_label_error(synthetic)
    print(f"held-out reference set: {sizes['test_rows']} rows; students trained on {sizes['reference_rows']} "
          f"reference rows (+ {sizes['synthetic_rows']} synthetic rows labelled by the teacher, relaxed by "
          f"{'it' if args.synthetic_structures == 'teacher' else 'EMT'}), {args.steps} steps, "
          f"seeds {seeds} (mean ± std)")
    print(f"synthetic labels vs EMT on the same structures: E MAE {label_error['energy_mae']:.1f} meV, "
          f"F MAE {label_error['force_mae']:.1f} meV/Å, F cos {label_error['force_cos']:.3f}")
    header = f"{'run':<16}{'E MAE meV':>16}{'F MAE meV/Å':>15}{'F cos':>16}"
    print(header)
    print("-" * len(header))
    for name, values in results.items():
        cells = []
        for k, digits, width in (("energy_mae", 0, 16), ("force_mae", 1, 15), ("force_cos", 3, 16)):
            v = np.asarray(values[k])
            spread = f" ± {v.std():.{digits}f}" if len(v) > 1 else ""
            cells.append(f"{v.mean():.{digits}f}{spread}".rjust(width))
        print(f"{name:<16}{''.join(cells)}")
    print(json.dumps({
        "bench": "mixer_study", "synthetic_structures": args.synthetic_structures, "steps": args.steps, "teacher_steps": args.teacher_steps, "seeds": seeds,
        **sizes, "synthetic_label_error": {k: round(v, 4) for k, v in label_error.items()},
        "wall_s": round(time.time() - started, 1),
        "results": {name: {k: [round(x, 4) for x in v] for k, v in values.items()} for name, values in results.items()},
    }))


def relabel(source: Path, out: Path, teacher: Path) -> None:
    """``source``'s rows with the teacher's energy and forces as their labels, origin ``synthetic``."""
    from augkd.io.dataset import DatasetWriter, read_frames
    from augkd.teachers import load_teacher

    if (out / "manifest.json").exists():
        return
    model = load_teacher(f"ckpt:{teacher.resolve()}")
    frames = []
    for frame in read_frames(source):
        labels = model.label(frame.atoms.copy())
        frame.energy, frame.forces = labels.energy, labels.forces
        frame.data.update(origin="synthetic", teacher=model.identity.name)
        frames.append(frame)
    writer = DatasetWriter(out, {"kind": "relabelled", "origin": "synthetic", "source": str(source.resolve()),
                                 "teacher": model.identity.to_dict(), "shard_count": 1})
    writer.open()
    writer.write_shard(0, frames, {})
    writer.finalize(1, {})


def synthetic_label_error(path: Path) -> dict[str, float]:
    """The teacher's labels on its own synthetic frames against the ground truth (EMT) on the same structures."""
    import torch
    from ase.calculators.emt import EMT

    from augkd.io.dataset import read_frames
    from augkd.train.metrics import MetricAccumulator

    metrics = MetricAccumulator()
    for frame in read_frames(path):
        atoms = frame.atoms.copy()
        atoms.calc = EMT()
        true_f = torch.from_numpy(atoms.get_forces(apply_constraint=False))
        free = torch.from_numpy(~frame.fixed)
        metrics.update(torch.tensor([frame.energy]), torch.tensor([atoms.get_potential_energy()]),
                       torch.from_numpy(frame.forces), true_f, torch.zeros(len(atoms), dtype=torch.long), free)
    out = metrics.compute()
    return {k: out[k] for k in ("energy_mae", "force_mae", "force_cos")}

if __name__ == "__main__":
    main()
