"""Shared by the jitter job tests (tests/distributed) and the `augkd jitter` command-line tests (tests/cli)."""

from __future__ import annotations

from pathlib import Path

NORM = 0.1


def jitter_args(source, out, *extra, mode="rattle", copies=2):
    return ["jitter", "--in", str(source), "--out", str(out), "--norm", str(NORM), "--mode", mode, "--teacher", "emt",
            "--copies", str(copies), "--seed", "3", "--quiet", *extra]


def jitter_job(source, mode="rattle", copies=2, student=None):
    """The job of ``jitter_args(source, out, mode=mode, copies=copies)`` (plus ``--student``), without the command
    line."""
    from augkd.distributed.jobs import JitterJob
    from augkd.generators.jitter import JitterConfig

    student = str(Path(student).resolve()) if student else None
    config = JitterConfig(norm=NORM, mode=mode, teacher="emt", copies=copies, seed=3, student=student)
    return JitterJob(source, config)


def rows_by_copy(path):
    from augkd.io.dataset import read_frames

    rows = {}
    for frame in read_frames(path):
        key = (frame.data["parent_sid"], frame.data["parent_fid"], frame.data["copy"])
        assert key not in rows, f"duplicate row {key}"
        rows[key] = frame
    return rows


def tiny_student(path):
    """A painn-tiny student checkpoint (float32, seed 0): what adversarial jitter attacks."""
    import torch

    from augkd.models.checkpoint import save_model
    from models.model_helpers import tiny_model

    return save_model(path, tiny_model("painn-tiny", dtype=torch.float32, seed=0))
