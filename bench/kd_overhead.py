"""Step time of KD training relative to the baseline, same student and same batches, in one run.

Prints ONE JSON line: seconds per step for the baseline (no teacher), n2n KD with cached teacher features (written by
`augkd label`), and n2n KD with the teacher running online every step; the ratios cached/baseline (target ≤ 1.10)
and online/baseline. Data: a small EMT-relaxed d1M set; teacher: a PaiNN checkpoint (weights do not matter for
timing); student: PaiNN-small (or --student).

    python bench/kd_overhead.py [--student painn-small] [--teacher painn] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.modules.setdefault("nvalchemiops", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--student", default="painn-small")
    parser.add_argument("--teacher", default="painn")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    import torch

    from augkd.cli import main as augkd
    from augkd.config import compose
    from augkd.models.checkpoint import save_model
    from augkd.models.registry import build_model
    from augkd.train.trainer import TrainConfig, Trainer

    work = Path(tempfile.mkdtemp(prefix="kd-overhead-"))
    data, labelled = work / "data", work / "labelled"
    quiet = ["--quiet"]
    assert augkd(["generate", "d1M", "--out", str(data), "--systems", "6", "--teacher", "emt", "--elements",
                  "Cu,Pt,O,H,C,N", "--max-atoms", "70", "--steps", "30", "--frames-fraction", "0.5",
                  "systems_sampler.max_miller=1", "filters.drop_anomalies=[desorbed,intercalated]", *quiet]) == 0
    teacher = save_model(work / "teacher.pt", build_model(args.teacher))
    assert augkd(["label", str(data), "--teacher", f"ckpt:{teacher}", "--features", "node", "--out",
                  str(labelled), *quiet]) == 0

    def trainer(mode: str) -> Trainer:
        values = compose("train", "default", [f"batch_size={args.batch_size}", f"steps={args.steps + 2}",
                                              f"model.name={args.student}", "checkpoint_every=1000000"])
        # the baseline reads the unlabelled rows (same rows, same order): it pays no decoding of cached features
        values["data"]["train"] = [str(data if mode == "baseline" else labelled)]
        if mode != "baseline":
            values["teacher"] = {"mode": mode, "spec": f"ckpt:{teacher}" if mode == "online" else None, "kwargs": {}}
            values["kd"]["losses"] = [{"name": "n2n", "lambda": 100.0}]
        return Trainer(TrainConfig.from_dict(values), work / f"run-{mode}")

    seconds = {}
    for mode in ("baseline", "cached", "online"):
        run = trainer(mode)
        torch.manual_seed(0)
        for _ in range(2):  # warm-up: first-call allocations
            run.train_step()
        start = time.perf_counter()
        for _ in range(args.steps):
            run.train_step()
        seconds[mode] = (time.perf_counter() - start) / args.steps
    print(json.dumps({
        "bench": "kd_overhead",
        "device": "cpu",
        "student": args.student,
        "teacher": args.teacher,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "seconds_per_step": {k: round(v, 4) for k, v in seconds.items()},
        "cached_over_baseline": round(seconds["cached"] / seconds["baseline"], 3),
        "online_over_baseline": round(seconds["online"] / seconds["baseline"], 3),
        "cached_target": 1.10,
    }))


if __name__ == "__main__":
    main()
