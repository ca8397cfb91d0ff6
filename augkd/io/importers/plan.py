"""What an import reads and how the work is cut into shards: made once, before anything is written.

``plan_import`` finds the files, hashes them (sha256), indexes extxyz files (frame offsets, composition runs, labels;
OC20 ``N.txt`` files are parsed and matched to their frames), counts the rows of databases and trajectories, and cuts
the selected frames into shards of about equal weight. Extxyz files are cut at any frame; every other file goes
whole to one shard (its weight: its frame count when known, else 1). Shard *i* is then a pure function of the plan,
so rerunning after a crash (or on another worker) writes the same rows; inputs that changed since the plan was
written change the plan, which the dataset writer refuses.
"""

from __future__ import annotations

import bisect
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ase.io.formats import string2index

from augkd.errors import ConfigError
from augkd.hashing import sha256_file
from augkd.io.importers.discover import FORMATS, ImportFileError, find_files
from augkd.io.importers.extxyz import index_extxyz
from augkd.io.importers.readers import check_complete, count_frames, read_oc20_txt, selection

#: default shard size (frames): an OC20 S2EF file holds 5000 structures
FRAMES_PER_SHARD = 5000
ENERGIES = ("total", "adsorption")
_ORIGIN = re.compile(r"^[A-Za-z0-9_.+-]+$")


def parse_index(text: str | None) -> int | slice | None:
    """``--index`` in ASE's syntax (``-1``, ``::10``, ``0:5``) as an int or a slice; None: every frame."""
    if text is None:
        return None
    try:
        value = string2index(text)
    except ValueError:
        value = None
    if not isinstance(value, (int, slice)):
        raise ConfigError(f"--index {text!r}: expected a frame number or a slice such as -1, ::10, 0:5")
    return value


@dataclass(frozen=True)
class ImportConfig:
    """An ``augkd import`` request, validated once here."""

    sources: tuple[str, ...]  # files, folders or glob patterns (absolute)
    origin: str = "dft"
    format: str = "auto"  # auto | ase | aselmdb | oc20-s2ef
    index: str | None = None  # ASE index syntax for the frames of every file: "-1", "::10", "0:5"
    shards: int | None = None  # default: one per FRAMES_PER_SHARD frames
    energy: str = "total"  # total | adsorption (OC20 S2EF: DFT total minus the N.txt reference energy)
    strict: bool = False

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("no SRC given: name files or folders to import")
        object.__setattr__(self, "sources", tuple(os.path.abspath(os.path.expanduser(str(s))) for s in self.sources))
        if not isinstance(self.origin, str) or not _ORIGIN.match(self.origin):
            raise ConfigError(f"--origin {self.origin!r}: a name of letters, digits and _.+- (e.g. dft, dft-pbe)")
        if self.format not in FORMATS:
            raise ConfigError(f"--format {self.format!r}: expected one of {', '.join(FORMATS)}")
        if self.energy not in ENERGIES:
            raise ConfigError(f"--energy {self.energy!r}: expected total or adsorption")
        if self.shards is not None and (isinstance(self.shards, bool) or not isinstance(self.shards, int)
                                        or self.shards < 1):
            raise ConfigError(f"--shards {self.shards!r} must be a whole number >= 1")
        parse_index(self.index)

    @property
    def selector(self) -> int | slice | None:
        """``--index`` as an int or a slice (None: every frame)."""
        return parse_index(self.index)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sources": list(self.sources)}


@dataclass(frozen=True)
class SourceFile:
    """One input file as planned."""

    path: str  # relative to the plan's root: the rows' ``source``
    format: str
    sha256: str
    bytes: int
    frames: int | None  # frames in the file when known before reading it (extxyz, databases, trajectories)
    companion: str | None = None  # OC20 S2EF: the N.txt (relative path)
    companion_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.companion is None:
            del out["companion"], out["companion_sha256"]
        return out


@dataclass(frozen=True)
class Piece:
    """The part of one file that one shard reads."""

    file: int  # index into the plan's sources
    frames: tuple[int, int, int] | None  # range(start, stop, step) of the file's frames; None: the whole file
    offset: int = 0  # extxyz: byte offset (uncompressed) of the lowest of those frames
    run: int = 0  # ... its composition run
    in_run: int = 0  # ... and its index in that run
    weight: int = 1

    @property
    def chosen(self) -> range | None:
        return None if self.frames is None else range(*self.frames)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "frames": list(self.frames) if self.frames else None, "offset": self.offset,
                "run": self.run, "in_run": self.in_run, "weight": self.weight}


@dataclass(frozen=True)
class ImportPlan:
    config: ImportConfig
    root: str  # absolute folder the sources' paths are relative to
    sources: tuple[SourceFile, ...]
    shards: tuple[tuple[Piece, ...], ...]
    ignored: tuple[str, ...]  # files inside folder SRCs that no reader takes

    @property
    def shard_count(self) -> int:
        return len(self.shards)

    def units(self, index: int) -> int:
        return sum(piece.weight for piece in self.shards[index])

    def path(self, file: int) -> Path:
        return Path(self.root) / self.sources[file].path

    def check_output(self, out: str | Path) -> None:
        """Refuse an output inside a folder being imported (a resumed import would find its own shards)."""
        out = Path(out).resolve()
        for source in self.config.sources:
            folder = Path(source)
            if folder.is_dir() and (out == folder or folder in out.parents):
                raise ConfigError(f"--out {out} is inside the input folder {folder}; write the dataset elsewhere")

    def to_dict(self) -> dict[str, Any]:
        config = self.config
        return {
            "kind": "imported",
            "origin": config.origin,
            "energy": config.energy,
            "config": config.to_dict(),
            "root": self.root,
            "shard_count": self.shard_count,
            "sources": [source.to_dict() for source in self.sources],
            "files_ignored": list(self.ignored),
            "units": [[piece.to_dict() for piece in shard] for shard in self.shards],
        }


@dataclass
class _Item:
    file: int
    weight: int
    chosen: range | None  # cut files: the selected frames
    index: Any = None  # cut files: their ExtxyzIndex


def plan_import(config: ImportConfig) -> ImportPlan:
    """Find, hash and index the inputs and cut them into shards; ``ImportFileError`` names a bad file."""
    found = find_files(config.sources, config.format)
    if config.energy == "adsorption":
        for item in found.files:
            if item.format != "oc20-s2ef":
                raise ImportFileError(f"{found.relative(item.path)}: --energy adsorption needs OC20 S2EF pairs "
                                      "(N.extxyz with N.txt reference energies); this file has none")
    selector = config.selector
    sources: list[SourceFile] = []
    items: list[_Item] = []
    for number, item in enumerate(found.files):
        name = found.relative(item.path)
        companion = companion_sha = None
        if item.format in ("extxyz", "oc20-s2ef"):
            index = index_extxyz(item.path, name)
            if index.labelled == 0:
                raise ImportFileError(f"{name}: no frame carries energy and forces (an energy= header key and a "
                                      "forces column); nothing to train on")
            if item.companion is not None:
                companion = found.relative(item.companion)
                read_oc20_txt(item.companion, companion, index.frames)
                companion_sha = sha256_file(item.companion)
            frames = index.frames
            chosen = selection(frames, selector, name)
            items.append(_Item(number, len(chosen), chosen, index))
        else:
            check_complete(item.path, name, item.format)
            frames = count_frames(item.path, name, item.format)
            if frames == 0:
                raise ImportFileError(f"{name}: holds no frame")
            weight = len(selection(frames, selector, name)) if frames is not None else 1
            items.append(_Item(number, weight, None))
        sources.append(SourceFile(name, item.format, sha256_file(item.path), item.path.stat().st_size, frames,
                                  companion, companion_sha))
    if not any(item.weight for item in items):
        raise ImportFileError(f"--index {config.index}: selects no frame of {len(items)} file(s)")
    return ImportPlan(config, str(found.root), tuple(sources), _cut(items, config.shards), found.ignored)


def _cut(items: list[_Item], requested: int | None) -> tuple[tuple[Piece, ...], ...]:
    """Shards of about equal weight, in file order; cut files are split at frame boundaries."""
    total = sum(item.weight for item in items)
    pieces_at_most = sum(item.weight if item.chosen is not None else 1 for item in items if item.weight)
    count = requested if requested is not None else math.ceil(total / FRAMES_PER_SHARD)
    count = max(1, min(count, pieces_at_most))
    bounds = [k * total // count for k in range(count + 1)]
    shards: list[list[Piece]] = [[] for _ in range(count)]
    start = 0
    for item in items:
        end = start + item.weight
        if item.weight and item.chosen is None:
            middle = (start + end) / 2
            shards[min(bisect.bisect_right(bounds, middle) - 1, count - 1)].append(Piece(item.file, None,
                                                                                         weight=item.weight))
        elif item.weight:
            first_shard = max(bisect.bisect_right(bounds, start) - 1, 0)
            for k in range(first_shard, count):
                lo, hi = max(bounds[k], start), min(bounds[k + 1], end)
                if lo >= end:
                    break
                if lo >= hi:
                    continue
                sub = item.chosen[lo - start:hi - start]
                lowest = min(sub[0], sub[-1])
                index = item.index
                shards[k].append(Piece(
                    item.file, (sub.start, sub.stop, sub.step), offset=int(index.offsets[lowest]),
                    run=int(index.runs[lowest]), in_run=int(index.in_run[lowest]), weight=len(sub),
                ))
        start = end
    return tuple(tuple(shard) for shard in shards if shard)
