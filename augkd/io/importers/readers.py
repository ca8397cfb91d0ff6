"""Frames of one piece of one input file, each with its system id (``sid``) and frame id (``fid``).

Ids: a source's own ids win — OC20 S2EF ``N.txt`` lines, ``sid``/``fid`` in an extxyz header, in an ASE database
row's key-value pairs or in a fairchem row's ``data``. Otherwise the frames of a file are grouped into composition
runs (consecutive frames with the same atomic numbers, in order: a relaxation, an MD trajectory) and
``sid = "<source>#<run>"``, ``fid`` = the frame's index within its run (the ionic step of a VASP or GPAW relaxation).
A frame with its own sid but no fid gets its index in the file.

``--index`` (ASE's syntax: ``-1``, ``::10``, ``0:5``) selects frames of every file after the ids are given, so a
frame keeps its step index whatever is selected.
"""

from __future__ import annotations

import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
from ase import Atoms
from ase.io.formats import open_with_compression

from augkd.io.importers.discover import ImportFileError
from augkd.io.importers.extxyz import read_span

_DIGITS = re.compile(r"(\d+)$")
#: formats read through ase.db.connect (sid/fid from key-value pairs and data)
DATABASES = ("db", "json", "aselmdb")


@dataclass
class SourceFrame:
    """One frame as the file gives it: atoms with the file's calculator results (energy, forces, stress), on
    ``atoms.calc`` or, when ``results`` is given, there (``atoms.calc`` is then None)."""

    atoms: Atoms
    frame: int  # index in the file
    sid: str
    fid: int
    reference_energy: float | None = None  # OC20 S2EF: energy of the bare slab + gas references (eV)
    results: dict[str, Any] | None = None  # calculator results given apart (extxyz fast path); None: atoms.calc's


class Runs:
    """Composition runs as frames go by: ``next(signature)`` → (run, index within the run)."""

    def __init__(self) -> None:
        self.run, self.in_run, self.previous = -1, 0, None

    def next(self, signature: bytes) -> tuple[int, int]:
        if signature != self.previous:
            self.run, self.in_run, self.previous = self.run + 1, 0, signature
        else:
            self.in_run += 1
        return self.run, self.in_run


def _fid(value: Any) -> int | None:
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Integral):  # numpy integers too: an extxyz header's fid=21 is parsed as np.int64
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        match = _DIGITS.search(value.strip())
        return int(match.group(1)) if match else None
    return None


def frame_ids(own: Mapping[str, Any], source: str, frame: int, run: int, in_run: int) -> tuple[str, int]:
    """(sid, fid) of a frame: the file's own when it has them, else its composition run and place in it."""
    sid = own.get("sid")
    fid = _fid(own.get("fid"))
    if sid is None or sid == "":
        return f"{source}#{run}", in_run if fid is None else fid
    return str(sid), frame if fid is None else fid


def selection(frames: int, index: int | slice | None, name: str) -> range:
    """The frames ``--index`` selects in a file of ``frames`` frames (all when None)."""
    if index is None:
        return range(frames)
    if isinstance(index, int):
        position = index + frames if index < 0 else index
        if not 0 <= position < frames:
            raise ImportFileError(f"{name}: --index {index} is outside its {frames} frames")
        return range(position, position + 1)
    return range(frames)[index]


# -- counting before reading ------------------------------------------------------------------------------------------
def connect(path: Path, fmt: str):
    """An ASE database opened for reading only: the user's file is never written to."""
    import ase.db

    if fmt == "aselmdb":  # as fairchem opens them: read-only, no lock file beside the user's data
        return ase.db.connect(str(path), type="aselmdb", readonly=True, use_lock_file=False)
    if fmt == "db":
        _check_ase_sqlite(path)
    return ase.db.connect(str(path), type=fmt, use_lock_file=False)


def _check_ase_sqlite(path: Path) -> None:
    """ASE would add its tables to a foreign sqlite file; refuse one without them instead."""
    import sqlite3

    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        found = connection.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='systems'").fetchone()
    finally:
        connection.close()
    if found is None:
        raise ValueError("an sqlite file without ASE's 'systems' table")


def count_frames(path: Path, name: str, fmt: str) -> int | None:
    """Frames in a database or trajectory (cheap: no structure is decoded); None for text formats."""
    try:
        if fmt in DATABASES:
            return int(connect(path, fmt).count())
        if fmt == "traj":
            from ase.io.trajectory import Trajectory

            with Trajectory(str(path)) as trajectory:
                return len(trajectory)
    except Exception as exc:  # sqlite3, lmdb, ulm and json errors alike: the file is unreadable
        raise ImportFileError(f"{name}: unreadable {fmt} file ({type(exc).__name__}: {_first_line(exc)})") from None
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


# -- OC20 S2EF ------------------------------------------------------------------------------------------------------
def read_oc20_txt(path: Path, name: str, expected: int) -> list[tuple[str, int, float]]:
    """``system_id,frame_number,reference_energy`` per line, e.g. ``random1331004,frame21,-0.6548``."""
    entries: list[tuple[str, int, float]] = []
    try:
        with open_with_compression(str(path), "rt") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                fields = line.strip().split(",")
                fid = _fid(fields[1]) if len(fields) == 3 else None
                try:
                    reference = float(fields[2]) if fid is not None else None
                except ValueError:
                    reference = None
                if reference is None or not fields[0]:
                    raise ImportFileError(
                        f"{name}: line {number}: expected system_id,frameN,reference_energy, got {line.strip()[:60]!r}"
                    )
                entries.append((fields[0], fid, reference))
    except ImportFileError:
        raise
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ImportFileError(f"{name}: unreadable ({type(exc).__name__}: {_first_line(exc)})") from None
    if len(entries) != expected:
        raise ImportFileError(f"{name}: {len(entries)} lines for the {expected} frames of its extxyz file")
    return entries


# -- whole files ----------------------------------------------------------------------------------------------------
def check_complete(path: Path, name: str, fmt: str) -> None:
    """Refuse a vasprun.xml cut short (ASE would silently keep the complete steps)."""
    if fmt != "vasp-xml":
        return
    tail = b""
    with open_with_compression(str(path), "rb") as handle:
        while block := handle.read(1 << 20):
            tail = (tail + block)[-256:]
    if not tail.rstrip().endswith(b"</modeling>"):
        raise ImportFileError(f"{name}: truncated (no closing </modeling>; was VASP still running?)")


def _ase_frames(path: Path, fmt: str) -> Iterator[tuple[Atoms, Mapping[str, Any]]]:
    if fmt in DATABASES:
        database = connect(path, fmt)
        for row in database.select():
            own = {**row.key_value_pairs}
            if isinstance(row.data, Mapping):
                own.update({k: row.data[k] for k in ("sid", "fid") if k in row.data})
            yield row.toatoms(), own
        return
    from ase.io import iread

    for atoms in iread(str(path), index=":", format=fmt):
        yield atoms, atoms.info


def whole_file_frames(path: Path, name: str, fmt: str, frames: int | None,
                      index: int | slice | None) -> Iterator[SourceFrame]:
    """Every frame of a file ASE (or ase.db) reads whole; ``frames`` is its count when known, else it is buffered."""
    runs = Runs()
    frame = -1

    def all_frames() -> Iterator[SourceFrame]:
        nonlocal frame
        for frame, (atoms, own) in enumerate(_ase_frames(path, fmt)):
            run, in_run = runs.next(atoms.numbers.tobytes())
            sid, fid = frame_ids(own, name, frame, run, in_run)
            yield SourceFrame(atoms, frame, sid, fid)

    try:
        if frames is not None:
            yield from _select_streaming(all_frames(), selection(frames, index, name))
            return
        read = list(all_frames())
        if not read:
            raise ImportFileError(f"{name}: holds no frame ASE can read as {fmt}")
        for position in selection(len(read), index, name):
            yield read[position]
    except ImportFileError:
        raise
    except Exception as exc:  # ASE's readers raise anything on bad input: name the file and the frame
        where = f"frame {frame + 1}" if frame >= 0 else "its first frame"
        raise ImportFileError(
            f"{name}: unreadable as {fmt} at {where} ({type(exc).__name__}: {_first_line(exc)})"
        ) from None


def _select_streaming(items: Iterable[SourceFrame], chosen: range) -> Iterator[SourceFrame]:
    if not chosen:
        return
    if chosen.step > 0:
        last = chosen[-1]
        for item in items:
            if item.frame in chosen:
                yield item
            if item.frame >= last:
                return
        return
    kept = {item.frame: item for item in items if item.frame in chosen}
    for position in chosen:
        yield kept[position]


def span_frames(path: Path, name: str, chosen: range, offset: int, run: int, in_run: int,
                oc20: list[tuple[str, int, float]] | None) -> Iterator[SourceFrame]:
    """The frames ``chosen`` of an extxyz file (a shard's cut), in the order of ``chosen``."""
    if not chosen:
        return
    first, last = min(chosen[0], chosen[-1]), max(chosen[0], chosen[-1])

    def frames() -> Iterator[SourceFrame]:
        for item in read_span(path, name, first, last, chosen, offset, run, in_run):
            if oc20 is not None:
                sid, fid, reference = oc20[item.frame]
                yield SourceFrame(item.atoms, item.frame, sid, fid, reference, item.results)
            else:
                sid, fid = frame_ids(item.atoms.info, name, item.frame, item.run, item.in_run)
                yield SourceFrame(item.atoms, item.frame, sid, fid, results=item.results)

    if chosen.step > 0:
        yield from frames()
    else:
        kept = {item.frame: item for item in frames()}
        for position in chosen:
            yield kept[position]
