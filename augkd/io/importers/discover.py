"""Which files ``augkd import`` reads, and in which format.

A SRC is a file, a folder (searched recursively; hidden entries skipped) or a glob pattern. Files are recognised by
name (compressed text files too: ``.xz``, ``.gz``, ``.bz2``):

============================  ==============  ====================================================================
name                          format          read by
============================  ==============  ====================================================================
``*.extxyz``, ``*.xyz``       ``extxyz``      augkd's frame index + ASE's extxyz parser, frame by frame
``N.extxyz`` + ``N.txt``      ``oc20-s2ef``   the same, with sid, fid and reference energy from line *i* of N.txt
``*.traj``                    ``traj``        ``ase.io.iread``
``*.db``                      ``db``          ``ase.db.connect`` (sqlite)
``*.aselmdb``                 ``aselmdb``     ``ase.db.connect`` (fairchem's ``ase_db_backends`` LMDB backend)
``OUTCAR*``                   ``vasp-out``    ``ase.io.iread``: every ionic step
``vasprun*.xml``              ``vasp-xml``    ``ase.io.iread``: every ionic step
``*.txt``, ``*.out``, ...     ``gpaw-out``    ``ase.io.iread`` when ASE recognises a GPAW text log by its content
============================  ==============  ====================================================================

A file named explicitly as a SRC may be in any other format ASE reads (its content decides); inside folders only
the names above count, everything else is ignored (and counted). The relative path of a file (its ``source``) is
taken from the deepest folder holding every SRC (a folder SRC counts as its own root, a file as its folder's).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ase.io.formats import UnknownFileTypeError, filetype, get_compression, ioformats

from augkd.errors import AugkdError

#: ``--format`` values: ``auto`` (by name, OC20 S2EF pairs recognised), ``ase`` (the same files, no OC20 pairing:
#: N.txt files are not read, energies stay totals), ``aselmdb`` (fairchem ``.aselmdb`` only), ``oc20-s2ef``
#: (N.extxyz + N.txt pairs only).
FORMATS = ("auto", "ase", "aselmdb", "oc20-s2ef")

#: formats whose files are random-access databases or binary trajectories: they cannot be read as compressed streams
_BINARY = ("traj", "db", "aselmdb")
#: text-log suffixes worth asking ASE about (GPAW writes its log wherever ``txt=`` says)
_LOG_SUFFIXES = (".txt", ".out", ".log", ".gpaw")
_GLOB_CHARS = set("*?[")


class ImportFileError(AugkdError):
    """An input file (or SRC) that cannot be imported; the message names it (and the frame where known)."""


@dataclass(frozen=True)
class FoundFile:
    """One input file: its absolute path, its format and, for OC20 S2EF, the N.txt beside it."""

    path: Path
    format: str
    companion: Path | None = None


@dataclass(frozen=True)
class Discovery:
    root: Path  # the folder relative paths are taken from
    files: tuple[FoundFile, ...]  # sorted by relative path
    ignored: tuple[str, ...]  # relative paths of files inside folder SRCs that no reader recognised

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def find_files(sources: Sequence[str | Path], fmt: str = "auto") -> Discovery:
    """Every file the SRCs name, with its format; a one-line ``ImportFileError`` for a SRC that names nothing."""
    if fmt not in FORMATS:
        raise ImportFileError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if not sources:
        raise ImportFileError("no SRC given: name files or folders to import")
    found: dict[Path, FoundFile] = {}
    ignored: list[Path] = []
    roots: list[Path] = []
    for source in sources:
        for path in _expand(str(source)):
            if path.is_dir():
                roots.append(path)
                _check_not_a_dataset(path)
                kept, skipped = _walk(path, fmt)
                if not kept:
                    raise ImportFileError(f"{source}: no file augkd can import in this folder ({_what(fmt)})")
                for item in kept:
                    found.setdefault(item.path, item)
                ignored += skipped
            else:
                roots.append(path.parent)
                item = _explicit(path, fmt)
                found.setdefault(item.path, item)
    # a file read as the N.txt of an OC20 pair is not a source of its own
    companions = {f.companion for f in found.values() if f.companion is not None}
    files = [f for f in found.values() if f.path not in companions]
    root = Path(os.path.commonpath([str(r) for r in roots]))
    files.sort(key=lambda f: f.path.relative_to(root).as_posix())
    skipped = sorted({p.relative_to(root).as_posix() for p in ignored if p not in found and p not in companions})
    return Discovery(root, tuple(files), tuple(skipped))


def _what(fmt: str) -> str:
    if fmt == "aselmdb":
        return "*.aselmdb"
    if fmt == "oc20-s2ef":
        return "N.extxyz[.xz] with N.txt[.xz]"
    return "extxyz, xyz, traj, db, aselmdb, OUTCAR, vasprun.xml, GPAW logs"


def _expand(source: str) -> list[Path]:
    path = Path(source).expanduser()
    if path.exists():
        return [path.resolve()]
    if _GLOB_CHARS & set(source):
        matches = sorted(glob.glob(os.path.expanduser(source), recursive=True))
        if not matches:
            raise ImportFileError(f"{source} matches no file")
        return [Path(m).resolve() for m in matches]
    raise ImportFileError(f"{source}: no such file or folder")


def _check_not_a_dataset(folder: Path) -> None:
    if (folder / "manifest.json").is_file() and (folder / "plan.json").is_file():
        raise ImportFileError(f"{folder} is an augkd dataset already: pass it to split/train/label as it is")


def _walk(folder: Path, fmt: str) -> tuple[list[FoundFile], list[Path]]:
    kept: list[FoundFile] = []
    ignored: list[Path] = []
    for directory, subdirs, names in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.endswith("-lock"):
                continue
            path = Path(directory) / name
            kind = _format_by_name(path, fmt)
            if kind is None:
                ignored.append(path)
                continue
            kept.append(_found(path, kind, fmt))
    return kept, ignored


def _explicit(path: Path, fmt: str) -> FoundFile:
    if fmt in ("auto", "oc20-s2ef"):
        pair = _pair_of_companion(path)
        if pair is not None:  # N.txt named on its own: the pair it belongs to
            return _found(pair, "extxyz", fmt)
    kind = _format_by_name(path, fmt)
    if kind is None:
        if fmt in ("aselmdb", "oc20-s2ef"):
            raise ImportFileError(f"{path}: not a {_what(fmt)} file (--format {fmt})")
        try:
            kind = filetype(str(path), guess=True)
        except (UnknownFileTypeError, OSError, ValueError) as exc:
            raise ImportFileError(f"{path}: not a format augkd imports ({exc})") from None
        if kind not in ioformats or not ioformats[kind].can_read:
            raise ImportFileError(f"{path}: ASE cannot read its format {kind!r}")
    return _found(path, kind, fmt)


def _found(path: Path, kind: str, fmt: str) -> FoundFile:
    root, compression = get_compression(str(path))
    if compression and kind in _BINARY:
        raise ImportFileError(f"{path}: a compressed {kind} file cannot be read as a stream; decompress it first")
    if kind == "extxyz" and fmt in ("auto", "oc20-s2ef"):
        companion = _companion(Path(root))
        if companion is not None:
            return FoundFile(path, "oc20-s2ef", companion)
        if fmt == "oc20-s2ef":
            stem = Path(root).with_suffix("")
            raise ImportFileError(f"{path}: no {stem.name}.txt[.xz] beside it (--format oc20-s2ef needs the pair)")
    return FoundFile(path, kind, None)


def _companion(uncompressed: Path) -> Path | None:
    """OC20 S2EF: ``N.txt`` (or ``N.txt.xz``/.gz/.bz2) beside ``N.extxyz``."""
    stem = uncompressed.with_suffix("")
    for suffix in ("", ".xz", ".gz", ".bz2"):
        candidate = stem.with_name(f"{stem.name}.txt{suffix}")
        if candidate.is_file():
            return candidate
    return None


def _pair_of_companion(path: Path) -> Path | None:
    """``N.extxyz[.xz]`` beside an OC20 ``N.txt[.xz]``, or None."""
    root, _ = get_compression(path.name)
    if not root.endswith(".txt"):
        return None
    stem = root[: -len(".txt")]
    for suffix in ("", ".xz", ".gz", ".bz2"):
        candidate = path.with_name(f"{stem}.extxyz{suffix}")
        if candidate.is_file():
            return candidate
    return None


def _format_by_name(path: Path, fmt: str) -> str | None:
    """The format a file's name says, as ``--format`` allows; None for a file no reader takes."""
    root, _ = get_compression(path.name)
    lower = root.lower()
    if fmt == "aselmdb":
        return "aselmdb" if lower.endswith(".aselmdb") else None
    if lower.endswith((".extxyz", ".xyz")):
        return "extxyz"
    if fmt == "oc20-s2ef":
        return None
    if lower.endswith(".aselmdb"):
        return "aselmdb"
    if lower.endswith(".traj"):
        return "traj"
    if lower.endswith(".db"):
        return "db"
    if root.startswith("OUTCAR"):
        return "vasp-out"
    if lower.startswith("vasprun") and lower.endswith(".xml"):
        return "vasp-xml"
    if lower.endswith(_LOG_SUFFIXES):
        try:
            return "gpaw-out" if filetype(str(path), guess=False) == "gpaw-out" else None
        except (UnknownFileTypeError, OSError, ValueError):
            return None
    return None
