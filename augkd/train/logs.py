"""A training run's logs: ``train.csv``, ``val.csv`` and ``epochs.csv`` (appended across resumes) and TensorBoard
scalars in ``tb/``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


class RunLogs:
    """``train.csv``, ``val.csv`` and ``epochs.csv`` (appended across resumes) plus TensorBoard scalars in ``tb/``."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"))
        except ImportError:  # tensorboard is optional
            self.tb = None

    def _append(self, name: str, row: dict[str, Any]) -> None:
        path = self.run_dir / name
        new = not path.exists()
        if not new:
            with open(path) as handle:
                header = handle.readline().strip().split(",")
            row = {key: row.get(key, "") for key in header}
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def train(self, step: int, epoch: int, seconds: float, log: dict[str, float | str]) -> None:
        self._append("train.csv", {"step": step, "epoch": epoch, "seconds": round(seconds, 3), **log})
        if self.tb is not None:
            for key, value in log.items():
                if value != "":  # blank: this origin (or KD target) was not in the batch
                    self.tb.add_scalar(f"train/{key}", value, step)

    def epoch(self, row: dict[str, Any]) -> None:
        """``epochs.csv``: one row per epoch (``complete`` 0 for the one training ended in)."""
        self._append("epochs.csv", row)
        if self.tb is not None:
            for key, value in row.items():
                if key.startswith(("alpha_", "loss_")) and not key.startswith("alpha_target") and value != "":
                    self.tb.add_scalar(f"epoch/{key}", value, row["epoch"])

    def val(self, step: int, metrics: dict[str, float]) -> None:
        self._append("val.csv", {"step": step, **metrics})
        if self.tb is not None:
            for key, value in metrics.items():
                self.tb.add_scalar(f"val/{key}", value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
