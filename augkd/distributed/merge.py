"""Finish a dataset whose shards were written elsewhere (SLURM array tasks): verify every shard, write the manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from augkd.io.dataset import MANIFEST, PLAN, DatasetError, DatasetWriter, verify_dataset


def load_plan(out: str | Path) -> dict[str, Any]:
    """The plan written when the dataset was started (``generate`` or ``slurm submit``)."""
    plan_file = Path(out) / PLAN
    if not plan_file.is_file():
        raise DatasetError(f"{out} is not an augkd dataset (no {PLAN})")
    try:
        return json.loads(plan_file.read_text())
    except ValueError as exc:
        raise DatasetError(f"{plan_file} is not valid JSON ({exc})") from None


def index_ranges(indices: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` → ``"0-2,5,7-8"``: the form of ``sbatch --array`` and of error messages."""
    parts: list[str] = []
    last: int | None = None
    for index in sorted(indices):
        if last is not None and index == last + 1:
            first = parts[-1].split("-")[0]
            parts[-1] = f"{first}-{index}"
        else:
            parts.append(str(index))
        last = index
    return ",".join(parts)


def missing_shards(out: str | Path) -> list[int]:
    """Shards of the planned dataset that are not in place with a matching checksum."""
    plan = load_plan(out)
    return DatasetWriter(out, plan).missing_shards(plan["shard_count"])


def merge_dataset(out: str | Path) -> dict[str, Any]:
    """Verify every planned shard and write ``manifest.json``; returns it. Missing shards → one error naming them."""
    out = Path(out)
    plan = load_plan(out)
    count = plan["shard_count"]
    writer = DatasetWriter(out, plan)
    missing = writer.missing_shards(count)
    if missing:
        raise DatasetError(
            f"{out}: {len(missing)} of {count} shards missing or corrupt (shards {index_ranges(missing)}); "
            f"`augkd slurm resubmit {out}` redoes them"
        )
    manifest = writer.finalize(count, {"merged_from": "separate shard jobs"})
    problems = verify_dataset(out)
    if problems:
        (out / MANIFEST).unlink()  # the dataset exists only when it is sound
        first = problems[0]
        raise DatasetError(f"{out}/{first.shard}: {first.problem} ({len(problems)} problem(s) in all)")
    return manifest
