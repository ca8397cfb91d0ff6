"""``augkd split``: a seeded train/val(/test) split of a dataset into ordinary datasets that name their parent.

By system (default) every row of one ``sid`` lands on the same side, so relaxation frames of one system never
straddle train and validation; by row the rows are split independently. The keys (sorted sids, or (shard, row)
positions) are permuted by ``numpy.random.default_rng(seed)``: the first ``round(val·n)`` go to val, the next
``round(test·n)`` to test, the rest to train (each side gets at least one key). Same input and seed → same split.

Each side is written with the dataset writer (``augkd.io.dataset``): output shard *k* holds the rows of one input
shard that fall on that side (input shards with none are skipped), the manifest records the parent (path, kind,
shard checksums) and the split (side, by, seed, fractions, rows, systems), and an interrupted split resumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Mapping

import numpy as np

from augkd.errors import ConfigError
from augkd.io.aselmdb import read_aselmdb
from augkd.io.dataset import MANIFEST, PLAN, DatasetError, DatasetWriter, load_manifest, shard_paths

SIDES = ("train", "val", "test")
BY = ("system", "row")
#: parent manifest keys that describe the rows and so hold for every side
_INHERITED = ("kind", "origin", "energy", "teacher", "labelled_by", "label_config", "jitter")


@dataclass(frozen=True)
class SplitConfig:
    val: float  # fraction of the keys (systems or rows) for validation, in (0, 1)
    test: float | None = None  # fraction for testing, in (0, 1)
    by: str = "system"  # system | row
    seed: int = 0

    def __post_init__(self) -> None:
        _fraction("--val", self.val)
        if self.test is not None:
            _fraction("--test", self.test)
            if self.val + self.test >= 1:
                raise ConfigError(f"--val {self.val:g} + --test {self.test:g} must leave a training share (< 1)")
        if self.by not in BY:
            raise ConfigError(f"--by {self.by!r}: expected system or row")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"--seed {self.seed!r} must be a whole number")


def _fraction(name: str, value: Any) -> None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} {value!r} must be a number in (0, 1)") from None
    if not (math.isfinite(number) and 0.0 < number < 1.0):
        raise ConfigError(f"{name} {number:g} must be in (0, 1), e.g. 0.1")


def require_dataset(path: str | Path) -> dict[str, Any]:
    """The manifest of a finished dataset, or a one-line error that says how to make one from the files."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    if not (path.is_dir() and ((path / MANIFEST).is_file() or (path / PLAN).is_file())):
        raise DatasetError(f"{path} is not an augkd dataset; run: augkd import {path} --out DIR")
    return load_manifest(path)


def split_dataset(source: str | Path, config: SplitConfig, outputs: Mapping[str, str | Path]) -> dict[str, dict]:
    """Write the sides named in ``outputs`` (train, val and, with ``config.test``, test); returns their manifests."""
    source = Path(source)
    manifest = require_dataset(source)
    outs = _check_outputs(source, config, outputs)
    shards = shard_paths(source)
    sids = [[_sid(frame.data, shard, row) for row, frame in enumerate(read_aselmdb(path))]
            for shard, path in enumerate(shards)]
    keys = [[sid if config.by == "system" else (shard, row) for row, sid in enumerate(rows)]
            for shard, rows in enumerate(sids)]
    side_of = _assign(sorted({key for rows in keys for key in rows}), config, list(outs), config.by)
    sides = [[side_of[key] for key in rows] for rows in keys]  # sides[shard][row] → side name
    writers: dict[str, tuple[DatasetWriter, list[int]]] = {}
    for side, out in outs.items():
        kept = [shard for shard, rows in enumerate(sides) if side in rows]
        rows_on_side = sum(rows.count(side) for rows in sides)
        systems = len({sid for shard, rows in enumerate(sids) for row, sid in enumerate(rows)
                       if sides[shard][row] == side})
        plan = {
            **{key: manifest[key] for key in _INHERITED if key in manifest},
            "parent": {"path": str(source.resolve()), "kind": manifest.get("kind"),
                       "shards": [shard["sha256"] for shard in manifest["shards"]],
                       "rows": int(manifest.get("totals", {}).get("rows", sum(map(len, sids))))},
            "split": {"side": side, "by": config.by, "seed": config.seed, "val": config.val, "test": config.test,
                      "rows": rows_on_side, "systems": systems},
            "shard_count": len(kept),
            "parent_shard_of": kept,
        }
        writer = DatasetWriter(out, plan)
        writer.check()
        writers[side] = (writer, kept)
    for writer, _ in writers.values():
        writer.open()
    for shard, path in enumerate(shards):
        todo = {side: kept.index(shard) for side, (writer, kept) in writers.items()
                if shard in kept and writer.complete_shard(kept.index(shard)) is None}
        if not todo:
            continue
        frames = list(read_aselmdb(path))
        for side, number in todo.items():
            rows = [frame for row, frame in enumerate(frames) if sides[shard][row] == side]
            writers[side][0].write_shard(number, rows, {})
    return {side: writer.finalize(len(kept), {}) for side, (writer, kept) in writers.items()}


def _sid(data: Mapping[str, Any], shard: int, row: int) -> str:
    sid = data.get("sid")
    return str(sid) if sid is not None else f"(no sid: shard {shard} row {row})"


def _check_outputs(source: Path, config: SplitConfig, outputs: Mapping[str, str | Path]) -> dict[str, Path]:
    unknown = sorted(set(outputs) - set(SIDES))
    if unknown:
        raise ConfigError(f"unknown split side(s) {unknown}; expected {', '.join(SIDES)}")
    for side in ("train", "val"):
        if outputs.get(side) is None:
            raise ConfigError(f"--out-{side} is required")
    if (config.test is None) != (outputs.get("test") is None):
        raise ConfigError("--test and --out-test go together")
    outs = {side: Path(path) for side, path in outputs.items() if path is not None}
    resolved = {side: path.resolve() for side, path in outs.items()}
    parent = source.resolve()
    for side, path in resolved.items():
        if path == parent or parent in path.parents:
            raise ConfigError(f"--out-{side} {outs[side]} must lie outside the input dataset {source}")
        others = [other for other, p in resolved.items() if other != side and p == path]
        if others:
            raise ConfigError(f"--out-{side} and --out-{others[0]} are the same directory {outs[side]}")
        DatasetWriter(path, plan=None).check()
    return outs


def _assign(keys: list[Hashable], config: SplitConfig, sides: list[str], by: str) -> dict[Hashable, str]:
    count = len(keys)
    n_val = max(1, round(config.val * count))
    n_test = max(1, round(config.test * count)) if "test" in sides else 0
    if n_val + n_test >= count:
        unit = "systems" if by == "system" else "rows"
        raise ConfigError(f"{count} {unit} cannot fill train, {'val and test' if n_test else 'val'} "
                          f"(val {n_val}, test {n_test}); use smaller fractions" +
                          (" or --by row" if by == "system" else ""))
    order = np.random.default_rng(config.seed).permutation(count)
    side_of: dict[Hashable, str] = {}
    for rank, position in enumerate(order):
        side_of[keys[position]] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return side_of
