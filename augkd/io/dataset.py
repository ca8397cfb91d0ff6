"""An augkd dataset directory: ``shards/*.aselmdb`` + per-shard sidecars + ``manifest.json`` (written last).

Layout (shared spec, formats.md)::

    DATASET/
      plan.json        what is being made (config, teacher, seed, shard count); written first, checked on resume
      shards/          shard-00000.aselmdb ... (only complete shards ever appear here)
      index/           shard-00000.json: sha256, rows, counts; written after its shard is in place
      tmp/             shards being written
      manifest.json    written last and atomically: the dataset exists only once it does

A shard is written under ``tmp/`` in one transaction, then renamed into ``shards/`` (the rename is the commit),
then its sidecar is written. A shard whose sidecar is missing or whose checksum differs is redone.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from augkd import __version__
from augkd.errors import AugkdError
from augkd.hashing import sha256_file
from augkd.io.aselmdb import DamagedShardError, MissingShardError, count_aselmdb, read_aselmdb, remove_lmdb, write_aselmdb
from augkd.records import LabelledFrame

FORMAT_VERSION = 1
PLAN = "plan.json"
MANIFEST = "manifest.json"


class DatasetError(AugkdError):
    """A dataset directory is unusable for what was asked."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.aselmdb"


def write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        json.dump(value, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class ShardRecord:
    index: int
    file: str  # relative to the dataset directory
    sha256: str
    rows: int
    stats: dict[str, Any]
    bytes: int | None = None  # file size; absent in datasets written before it was recorded

    def to_dict(self) -> dict[str, Any]:
        size = {} if self.bytes is None else {"bytes": self.bytes}
        return {"index": self.index, "file": self.file, "sha256": self.sha256, "rows": self.rows, **size, **self.stats}


def _first_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if old == new else f"{prefix.rstrip('.')} ({old!r} → {new!r})"


class DatasetWriter:
    """Creates or resumes a dataset directory for a given plan, writes shards, writes the manifest."""

    def __init__(self, path: str | Path, plan: dict[str, Any] | None):
        """``plan=None`` only checks the location (file, foreign, unwritable), not what the dataset holds."""
        self.path = Path(path)
        self.plan = plan
        self.shards_dir = self.path / "shards"
        self.index_dir = self.path / "index"
        self.tmp_dir = self.path / "tmp"

    # -- checks that write nothing ------------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse a directory that is a file, foreign, or holds a different plan; writes nothing."""
        if self.path.exists() and not self.path.is_dir():
            raise DatasetError(f"--out {self.path} exists and is not a directory")
        if self.path.is_dir() and any(self.path.iterdir()):
            plan_file = self.path / PLAN
            if not plan_file.is_file():
                raise DatasetError(f"--out {self.path} is not empty and is not an augkd dataset (no {PLAN})")
            try:
                old = json.loads(plan_file.read_text())
            except (OSError, ValueError) as exc:
                raise DatasetError(f"--out {self.path}: unreadable {PLAN} ({exc})") from None
            difference = None if self.plan is None else _first_difference(old, self.plan)
            if difference:
                raise DatasetError(f"--out {self.path} holds a dataset made with another plan: {difference}")
        parent = self.path if self.path.is_dir() else self.path.parent
        while not parent.exists():
            parent = parent.parent
        if not os.access(parent, os.W_OK | os.X_OK):
            raise DatasetError(f"--out {self.path} is not writable")

    def open(self) -> None:
        if self.plan is None:
            raise ValueError("a DatasetWriter without a plan can only check()")
        self.check()
        try:
            for folder in (self.shards_dir, self.index_dir, self.tmp_dir):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatasetError(f"--out {self.path} is not writable ({exc.strerror})") from None
        if not (self.path / PLAN).exists():
            write_json_atomic(self.path / PLAN, self.plan)

    # -- shards --------------------------------------------------------------------------------------------------
    def complete_shard(self, index: int) -> ShardRecord | None:
        """The shard's record if it is in place and its checksum matches its sidecar; else None."""
        sidecar = self.index_dir / f"shard-{index:05d}.json"
        shard = self.shards_dir / shard_name(index)
        if not (sidecar.is_file() and shard.is_file()):
            return None
        try:
            record = json.loads(sidecar.read_text())
        except ValueError:
            return None
        if sha256_file(shard) != record.get("sha256"):
            return None
        stats = {k: v for k, v in record.items() if k not in ("index", "file", "sha256", "rows", "bytes")}
        return ShardRecord(index, record["file"], record["sha256"], record["rows"], stats, record.get("bytes"))

    def missing_shards(self, count: int) -> list[int]:
        return [i for i in range(count) if self.complete_shard(i) is None]

    def write_shard(self, index: int, frames: Iterable[LabelledFrame], stats: dict[str, Any]) -> ShardRecord:
        """Write one shard atomically. If another attempt landed the same shard first, keep that one."""
        # A unique temp name per attempt, so that two attempts at one shard never write the same file.
        tmp = self.tmp_dir / f"{socket.gethostname()}-{os.getpid()}-{shard_name(index)}"
        final = self.shards_dir / shard_name(index)
        remove_lmdb(tmp)
        try:
            rows = write_aselmdb(tmp, frames)
            _fsync_file(tmp)
            digest = sha256_file(tmp)
            size = tmp.stat().st_size
            try:
                os.link(tmp, final)  # the commit: fails if another attempt committed first
            except FileExistsError:
                landed = self.complete_shard(index)
                if landed is not None:
                    return landed  # the other attempt won; ours is discarded
                os.replace(tmp, final)  # a leftover of an attempt that died before its sidecar
        finally:
            remove_lmdb(tmp)
        record = ShardRecord(index, f"shards/{shard_name(index)}", digest, rows, stats, size)
        write_json_atomic(self.index_dir / f"shard-{index:05d}.json", record.to_dict())
        return record

    # -- manifest ------------------------------------------------------------------------------------------------
    def finalize(self, count: int, extra: dict[str, Any]) -> dict[str, Any]:
        """Verify that every shard is complete and write the manifest; returns it."""
        records = [self.complete_shard(i) for i in range(count)]
        missing = [i for i, r in enumerate(records) if r is None]
        if missing:
            raise DatasetError(f"{self.path}: shards {missing[:10]} are missing or corrupt; rerun to complete them")
        totals = _totals([r for r in records if r is not None])
        manifest = {
            "format_version": FORMAT_VERSION,
            "augkd_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **self.plan,
            **extra,
            "totals": totals,
            "shards": [r.to_dict() for r in records if r is not None],
        }
        write_json_atomic(self.path / MANIFEST, manifest)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        return manifest


def _totals(records: list[ShardRecord]) -> dict[str, Any]:
    totals: dict[str, Any] = {"rows": 0, "dropped_systems": {}, "dropped_frames": {}}
    for record in records:
        totals["rows"] += record.rows
        for key, value in record.stats.items():
            if isinstance(value, dict):
                bucket = totals.setdefault(key, {})
                for reason, n in value.items():
                    bucket[reason] = bucket.get(reason, 0) + n
            elif isinstance(value, (int, float)):
                totals[key] = totals.get(key, 0) + value
    return totals


# -- reading ---------------------------------------------------------------------------------------------------
def not_a_dataset(path: str | Path) -> DatasetError:
    return DatasetError(f"{path} is not an augkd dataset; run: augkd import {path} --out DIR")


def load_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    manifest = path / MANIFEST
    if not manifest.is_file():
        if (path / PLAN).is_file():
            raise DatasetError(f"{path} is incomplete (no {MANIFEST}); rerun the command that made it")
        raise not_a_dataset(path)
    try:
        return json.loads(manifest.read_text())
    except ValueError as exc:
        raise DatasetError(f"{manifest} is not valid JSON ({exc})") from None


# (path, size, mtime_ns) → sha256 of the shards this process has checked: a shard is hashed once per process
_checked: dict[tuple[str, int, int], str] = {}


def checked_shard(dataset: Path, record: dict[str, Any]) -> Path:
    """The shard file of a manifest ``record``, after its size and checksum have been compared with the manifest.

    Reading a truncated LMDB through its memory map kills the process (SIGBUS), and a flipped bit surfaces as a zlib
    or JSON error deep in a reader; both are caught here, before any reader maps the file.
    """
    file = dataset / record["file"]
    try:
        stat = file.stat()
    except FileNotFoundError:
        raise MissingShardError(file) from None
    expected = record.get("bytes")
    if expected is not None and stat.st_size != expected:
        raise DamagedShardError(file, f"size {stat.st_size}, manifest {expected}")
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _checked:
        _checked[key] = sha256_file(file)
    if _checked[key] != record["sha256"]:
        reason = "checksum differs from the manifest"
        if expected is None:
            reason = f"size {stat.st_size}, {reason}"
        raise DamagedShardError(file, reason)
    return file


def shard_paths(path: str | Path) -> list[Path]:
    """The shard files of a dataset directory (each checked against its manifest), or a single ``.aselmdb`` file."""
    path = Path(path)
    if path.is_file():
        try:
            count_aselmdb(path)
        except DamagedShardError:
            raise not_a_dataset(path) from None
        return [path]
    manifest = load_manifest(path)
    return [checked_shard(path, shard) for shard in manifest["shards"]]


def read_frames(path: str | Path) -> Iterator[LabelledFrame]:
    """Every row of a dataset directory (shard order) or of one shard file; every shard is checked first."""
    for shard in shard_paths(path):
        yield from read_aselmdb(shard)


@dataclass
class VerifyProblem:
    shard: str
    problem: str


def verify_dataset(path: str | Path) -> list[VerifyProblem]:
    """Checksums, readability and row counts of every shard; an empty list means the dataset is sound."""
    path = Path(path)
    manifest = load_manifest(path)
    problems: list[VerifyProblem] = []
    listed = set()
    for shard in manifest["shards"]:
        file = path / shard["file"]
        listed.add(file.name)
        if not file.is_file():
            problems.append(VerifyProblem(shard["file"], "missing"))
            continue
        if sha256_file(file) != shard["sha256"]:
            problems.append(VerifyProblem(shard["file"], "checksum differs from the manifest"))
            continue
        try:
            rows = count_aselmdb(file)
            for _ in read_aselmdb(file):
                pass
        except Exception as exc:
            problems.append(VerifyProblem(shard["file"], f"unreadable ({type(exc).__name__}: {exc})"))
            continue
        if rows != shard["rows"]:
            problems.append(VerifyProblem(shard["file"], f"{rows} rows, manifest says {shard['rows']}"))
    shards_dir = path / "shards"
    if shards_dir.is_dir():
        # lmdb's `-lock` files are left by readers such as ase.db.connect; they hold no data
        unlisted = (p.name for p in shards_dir.iterdir() if p.name not in listed and not p.name.endswith("-lock"))
        for extra in sorted(unlisted):
            problems.append(VerifyProblem(f"shards/{extra}", "not listed in the manifest"))
    return problems
