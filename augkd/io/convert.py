"""``augkd convert``: augkd datasets ↔ legacy OCP v1 LMDBs (the paper's d1M format)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import lmdb

from augkd.errors import AugkdError
from augkd.io.aselmdb import read_aselmdb
from augkd.io.dataset import DatasetWriter, load_manifest, shard_paths
from augkd.io.ocp_lmdb import lmdb_files, read_ocp_lmdb, write_ocp_lmdb
from augkd.records import LabelledFrame

FORMATS = ("ocp-lmdb", "aselmdb")


def convert(source: str | Path, out: str | Path, to: str, origin: str | None = None) -> int:
    """Convert ``source`` into format ``to`` at ``out``; returns the number of rows written."""
    source, out = Path(source), Path(out)
    if to not in FORMATS:
        raise AugkdError(f"--to {to!r} is not one of {FORMATS}")
    if not source.exists():
        raise AugkdError(f"{source} does not exist")
    created = not out.exists()
    try:
        if to == "ocp-lmdb":
            return _to_ocp_lmdb(source, out, origin)
        return _to_aselmdb(source, out, origin or "dft")
    except (ValueError, OSError, lmdb.Error) as exc:  # unreadable input: one line, nothing left behind
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise AugkdError(str(exc).splitlines()[0]) from exc
    except BaseException:
        if created:  # leave nothing half-written behind
            shutil.rmtree(out, ignore_errors=True)
        raise


def _with_origin(frames: Iterator[LabelledFrame], origin: str | None) -> Iterator[LabelledFrame]:
    for frame in frames:
        if origin is not None and "origin" not in frame.data:
            frame.data["origin"] = origin
        yield frame


def _to_ocp_lmdb(source: Path, out: Path, origin: str | None) -> int:
    """One ``data.NNNN.lmdb`` per shard, as OC20's S2EF folders were laid out."""
    load_manifest(source)  # refuses anything that is not a complete augkd dataset
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AugkdError(f"--out {out} exists and is not an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    rows = 0
    for number, shard in enumerate(shard_paths(source)):
        rows += write_ocp_lmdb(out / f"data.{number:04d}.lmdb", _with_origin(read_aselmdb(shard), origin))
    return rows


def _to_aselmdb(source: Path, out: Path, origin: str) -> int:
    """One augkd shard per input LMDB file, with a manifest, so the result loads like any augkd dataset."""
    try:
        files = lmdb_files(source)
    except FileNotFoundError as exc:
        raise AugkdError(str(exc)) from None
    plan = {
        "kind": "converted",
        "origin": origin,
        "source": str(source.resolve()),
        "source_format": "ocp-lmdb",
        "shard_count": len(files),
    }
    writer = DatasetWriter(out, plan)
    writer.open()
    for index, file in enumerate(files):
        if writer.complete_shard(index) is None:
            frames = list(_with_origin(read_ocp_lmdb(file), origin))
            writer.write_shard(index, frames, {"source_file": file.name})
    return writer.finalize(len(files), {})["totals"]["rows"]
