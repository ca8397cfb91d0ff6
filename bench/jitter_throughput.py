"""Jitter throughput: rows/s of ``jitter_frames`` in rattle and adversarial mode with the default teacher.

Prints ONE JSON line on stdout. Input rows: a small EMT-relaxed d1M dataset made by ``augkd generate`` (Cu/Pt
slabs ≤ 60 atoms with adsorbates, FixAtoms/tags as in OC20), the first ``--rows`` of them. Teacher: ``load_teacher``'s
default (CHGNet 0.3.0, differentiable: the attack's gradient passes through it). Student: a tiny PaiNN checkpoint
(``painn-tiny``; untrained: its weights do not change the cost). Both modes run on the same rows side by side, after
one warm-up call each; beside them, the cost of labelling alone (the teacher's batched ``label_batch`` versus its
ASE calculator one structure at a time), which is what rattle mode spends its time on.

The four (rattle, adversarial, label_batch, ase_calculator_loop) run interleaved (bench/interleave.py): one untimed
warm-up pass of each, then ``--repeats`` rounds of one pass of each. Rates are from the median seconds; ratios are
ratios of medians (``*_min``: of the fastest passes; ``*_rounds``: within each round, whose spread is the noise).

    python bench/jitter_throughput.py [--rows 16] [--batch-size N] [--norm 0.1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import torch
from interleave import interleave, timed


def make_rows(folder: Path, count: int) -> list:
    from augkd.cli import main as cli
    from augkd.io.dataset import read_frames, shard_paths

    out = folder / "emt"
    args = [
        "generate", "d1M", "--out", str(out), "--systems", "4", "--shards", "1", "--teacher", "emt",
        "--elements", "Cu,Pt,O,H,C,N", "--max-atoms", "60", "--steps", "25", "--fmax", "0.1",
        "--frames-fraction", "0.5", "--keep-final", "--seed", "7", "--quiet", "systems_sampler.max_miller=1",
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        if cli(args) != 0:
            raise SystemExit("augkd generate failed")
    frames = [frame for shard in shard_paths(out) for frame in read_frames(shard)]
    if len(frames) < count:
        raise SystemExit(f"the recipe gave {len(frames)} rows, fewer than --rows {count}")
    step = len(frames) // count  # spread over the systems, not the first relaxation only
    return frames[::step][:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--batch-size", type=int, help="structures per call (default: jitter's default)")
    parser.add_argument("--norm", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed passes of each")
    args = parser.parse_args()

    from augkd.generators.jitter import JitterConfig, batch_size_for, jitter_frames, prepare
    from augkd.generators.label import label_structures
    from augkd.io.arrays import encode_array
    from augkd.models import build_model
    from augkd.models.checkpoint import save_model

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = make_rows(folder, args.rows)
        torch.manual_seed(0)
        student = build_model("painn-tiny")
        student.fit_energy_normalizer(-4.0, 0.5, 0.5)
        student_path = save_model(folder / "student.pt", student)

        configs = {
            "rattle": JitterConfig(norm=args.norm, batch_size=args.batch_size),
            "adversarial": JitterConfig(norm=args.norm, mode="adversarial", student=str(student_path),
                                        batch_size=args.batch_size),
        }
        contexts = {mode: prepare(config) for mode, config in configs.items()}
        teacher = contexts["rattle"].teacher
        atoms = [row.atoms for row in rows]
        stats = {}

        def run(mode):
            context = contexts[mode]
            stats[mode] = jitter_frames(rows, configs[mode], context.teacher, context.student, encode_array)[1]

        work = {
            "rattle": lambda: timed(lambda: run("rattle")),
            "adversarial": lambda: timed(lambda: run("adversarial")),
            "label_batch": lambda: timed(lambda: label_structures(teacher, atoms, ["energy", "forces"])),
            "ase_calculator_loop": lambda: timed(lambda: [teacher.label(a, ["energy", "forces"]) for a in atoms]),
        }
        ratios = {"adversarial_over_rattle_time": ("adversarial", "rattle"),
                  "ase_calculator_loop_over_label_batch_time": ("ase_calculator_loop", "label_batch")}
        measured = interleave(work, repeats=args.repeats, ratios=ratios)
        seconds = measured.median
        batched, one_by_one = seconds["label_batch"], seconds["ase_calculator_loop"]

    rows_per_s = {mode: len(rows) / seconds[mode] for mode in configs}
    ratio_keys = {}
    for key, (top, bottom) in ratios.items():
        ratio_keys[key] = round(measured.ratios[key], 2)
        ratio_keys[f"{key}_median"] = round(measured.ratios[key], 2)
        ratio_keys[f"{key}_min"] = round(measured.min[top] / measured.min[bottom], 2)
        ratio_keys[f"{key}_rounds"] = [round(r, 2) for r in measured.round_ratios[key]]
    natoms = [len(row.atoms) for row in rows]
    print(json.dumps({
        "bench": "jitter_throughput",
        "device": f"cpu ({torch.get_num_threads()} threads)",
        "teacher": teacher.identity.name,
        "teacher_differentiable": stats["adversarial"]["teacher_differentiable"],
        "student": "painn-tiny",
        "rows": len(rows),
        "atoms_per_row": [min(natoms), max(natoms)],
        "batch_size": args.batch_size or batch_size_for(teacher),
        "norm": args.norm,
        "repeats": args.repeats,
        "rows_per_s": {mode: round(value, 3) for mode, value in rows_per_s.items()},
        "labels_per_s": {"label_batch": round(len(rows) / batched, 3),
                         "ase_calculator_loop": round(len(rows) / one_by_one, 3)},
        "seconds_median": {name: round(measured.median[name], 3) for name in work},
        "seconds_min": {name: round(measured.min[name], 3) for name in work},
        "seconds_values": {name: [round(v, 3) for v in measured.values[name]] for name in work},
        **ratio_keys,
        "fallback_directions": stats["adversarial"]["fallback_directions"],
    }))


if __name__ == "__main__":
    main()
