"""Step time of KD training relative to the baseline, same student and same batches, in one run.

Prints ONE JSON line: seconds per step for the baseline (no teacher), n2n KD with cached teacher features (written by
`augkd label`), and n2n KD with the teacher running online every step; the ratios cached/baseline (target ≤ 1.10)
and online/baseline. Data: a small EMT-relaxed d1M set; teacher: a PaiNN checkpoint (weights do not matter for
timing); student: PaiNN-small (or --student).

The modes are measured interleaved (bench/interleave.py): one untimed warm-up pass of each, then ``--repeats``
rounds of one pass of each (baseline, cached, online, baseline, ...), a pass being ``--steps`` training steps. Every
mode's k-th pass sees the same batches (same seed, same sampler order). The ratios are ratios of the medians;
``*_min`` are ratios of the fastest passes, ``*_rounds`` the ratio within each round (its spread is the noise).
Torch runs on ``--threads`` threads (default 1: on a shared machine more threads than free cores makes the step
time depend on the neighbours, which is what once gave cached/baseline 0.86, 1.04 and 4.04 in three runs).

    python bench/kd_overhead.py [--student painn-small] [--teacher painn] [--steps 8] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.modules.setdefault("nvalchemiops", None)

MODES = ("baseline", "cached", "online")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="painn-small")
    parser.add_argument("--teacher", default="painn")
    parser.add_argument("--steps", type=int, default=8, help="training steps per timed pass")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed passes of each mode")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of baseline,cached,online")
    parser.add_argument("--systems", type=int, default=6, help="systems of the generated dataset")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "baseline" not in modes or any(m not in MODES for m in modes):
        parser.error(f"--modes: a subset of {','.join(MODES)} including baseline")
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(args.threads)

    import torch

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already fixed by an earlier parallel call
        pass

    from interleave import interleave, timed

    from augkd.cli import main as augkd
    from augkd.config import compose
    from augkd.models.checkpoint import save_model
    from augkd.models.registry import build_model
    from augkd.train.trainer import TrainConfig, Trainer

    work = Path(tempfile.mkdtemp(prefix="kd-overhead-"))
    data, labelled = work / "data", work / "labelled"
    quiet = ["--quiet"]
    with contextlib.redirect_stdout(io.StringIO()):  # stdout keeps the one JSON line
        assert augkd(["generate", "d1M", "--out", str(data), "--systems", str(args.systems), "--teacher", "emt",
                      "--elements", "Cu,Pt,O,H,C,N", "--max-atoms", "70", "--steps", "30", "--frames-fraction", "0.5",
                      "systems_sampler.max_miller=1", "filters.drop_anomalies=[desorbed,intercalated]", *quiet]) == 0
        teacher = save_model(work / "teacher.pt", build_model(args.teacher))
        if "cached" in modes:
            assert augkd(["label", str(data), "--teacher", f"ckpt:{teacher}", "--features", "node", "--out",
                          str(labelled), *quiet]) == 0
    total_steps = (args.repeats + 1) * args.steps + 1  # warm-up pass + timed passes: the schedule never ends

    def trainer(mode: str) -> Trainer:
        values = compose("train", "default", [f"batch_size={args.batch_size}", f"steps={total_steps}",
                                              f"model.name={args.student}", "checkpoint_every=1000000"])
        # the baseline reads the unlabelled rows (same rows, same order): it pays no decoding of cached features
        values["data"]["train"] = [str(data if mode == "baseline" else labelled)]
        if mode != "baseline":
            values["teacher"] = {"mode": mode, "spec": f"ckpt:{teacher}" if mode == "online" else None, "kwargs": {}}
            values["kd"]["losses"] = [{"name": "n2n", "lambda": 100.0}]
        torch.manual_seed(0)  # same student initialisation in every mode
        return Trainer(TrainConfig.from_dict(values), work / f"run-{mode}")

    runs = {mode: trainer(mode) for mode in modes}

    def one_pass(run: Trainer):
        def steps() -> None:
            for _ in range(args.steps):
                run.train_step()

        return lambda: timed(steps) / args.steps

    ratios = {f"{mode}_over_baseline": (mode, "baseline") for mode in modes if mode != "baseline"}
    result = interleave({mode: one_pass(run) for mode, run in runs.items()}, repeats=args.repeats, ratios=ratios)
    out = {
        "bench": "kd_overhead",
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "student": args.student,
        "teacher": args.teacher,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "seconds_per_step": {m: round(result.median[m], 4) for m in modes},
        "seconds_per_step_median": {m: round(result.median[m], 4) for m in modes},
        "seconds_per_step_min": {m: round(result.min[m], 4) for m in modes},
        "seconds_per_step_values": {m: [round(v, 4) for v in result.values[m]] for m in modes},
    }
    for key, (top, bottom) in ratios.items():
        out[key] = round(result.ratios[key], 3)
        out[f"{key}_median"] = round(result.ratios[key], 3)
        out[f"{key}_min"] = round(result.min[top] / result.min[bottom], 3)
        out[f"{key}_rounds"] = [round(r, 3) for r in result.round_ratios[key]]
    out["cached_target"] = 1.10
    out["loadavg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))
    del runs
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
