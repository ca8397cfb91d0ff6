"""Extended XYZ files (plain or compressed) frame by frame: a cheap index first, then ASE's parser on the frames.

``index_extxyz`` reads the text once without parsing numbers: where each frame starts (byte offset in the
uncompressed text), which *composition run* it belongs to (consecutive frames with the same species column form one
run: a relaxation or an MD trajectory is one run, a file of unrelated structures has one run per change), and
whether its header carries labels (``energy=`` and a ``forces`` column). A file is then cut between shards at any
frame: a shard starts reading at a frame's offset, knowing its run and its place in the run from the index.

``read_span`` parses each frame with ASE's own extxyz frame parser, so the rows are exactly what
``ase.io.read(file, index=":")`` gives (including FixAtoms from ``move_mask``, tags, stress and info keys).
"""

from __future__ import annotations

import inspect
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
from ase import Atoms
from ase.io.extxyz import key_val_str_to_dict, read_xyz
from ase.io.formats import open_with_compression

from augkd.io.importers.discover import ImportFileError

_PROPERTIES = re.compile(rb'(?:^|\s)Properties=(?:"([^"]*)"|(\S+))')
_ENERGY = re.compile(rb"(?:^|\s)energy=")
_READ_ERRORS = (OSError, EOFError, ValueError, UnicodeDecodeError)  # lzma/gzip/bz2 errors are OSError or EOFError


@dataclass(frozen=True)
class ExtxyzIndex:
    """Where the frames of one extxyz file are. All arrays have one entry per frame."""

    offsets: np.ndarray  # int64: byte offset of the frame's atom-count line in the uncompressed text
    runs: np.ndarray  # int64: composition run of the frame (0, 1, ...)
    in_run: np.ndarray  # int64: index of the frame within its run
    labelled: int  # frames whose header has energy= and a forces column

    @property
    def frames(self) -> int:
        return len(self.offsets)


def open_text_bytes(path: str | Path) -> BinaryIO:
    """The file's (decompressed) bytes, by its suffix: .xz, .gz, .bz2 or plain."""
    return open_with_compression(str(path), "rb")


def _columns(header: bytes, cache: dict[bytes, tuple[int, int, bool]]) -> tuple[int, int, bool]:
    """(column of the species or Z property, number of columns, whether a forces column exists) of a frame."""
    match = _PROPERTIES.search(header)
    spec = (match.group(1) or match.group(2)) if match else b"species:S:1:pos:R:3"
    found = cache.get(spec)
    if found is None:
        fields = spec.split(b":")
        column, species, forces = 0, 0, False
        for name, cols in zip(fields[::3], fields[2::3]):
            if name in (b"species", b"Z"):
                species = column
            forces = forces or name == b"forces"
            try:
                column += int(cols)
            except ValueError:
                break
        found = cache[spec] = (species, column, forces)
    return found


def _signature(lines: list, column: int):
    """The species column of a frame's atom lines (bytes or str, as given): equal lists for equal compositions."""
    if column == 0:
        return [line.split(None, 1)[0] for line in lines]
    return [line.split()[column] for line in lines]


def _count(line: bytes, name: str, frame: int) -> int:
    try:
        return int(line)
    except ValueError:
        if line.lstrip().startswith(b"VEC"):
            raise ImportFileError(f"{name}: frame {frame - 1}: VEC cell lines are not supported; write the cell as "
                                  "Lattice=\"...\" (ase.io.write(..., format='extxyz'))") from None
        got = line[:40].decode(errors="replace")
        raise ImportFileError(f"{name}: frame {frame}: expected the number of atoms, got {got!r}") from None


def index_extxyz(path: str | Path, name: str) -> ExtxyzIndex:
    """Index every frame of an extxyz file (``name`` is how errors call it). Refuses truncated or malformed files."""
    offsets: list[int] = []
    runs: list[int] = []
    in_run: list[int] = []
    labelled = 0
    cache: dict[bytes, tuple[int, int, bool]] = {}
    previous: list | None = None
    run, position = -1, 0
    offset = 0
    frame = 0
    try:
        with open_text_bytes(path) as handle:
            readline = handle.readline
            while True:
                count_line = readline()
                if not count_line.strip():
                    break  # end of file, or a blank line: ASE stops reading there too
                natoms = _count(count_line, name, frame)
                header = readline()
                lines = [readline() for _ in range(natoms)]
                if not header or (natoms and not lines[-1]):
                    got = sum(1 for line in lines if line)
                    raise ImportFileError(f"{name}: truncated in frame {frame} ({got} of {natoms} atom lines)")
                column, width, forces = _columns(header, cache)
                if natoms and len(lines[-1].split()) < width:
                    raise ImportFileError(f"{name}: truncated in frame {frame} (an atom line has fewer than "
                                          f"{width} columns)")
                try:
                    signature = _signature(lines, column)
                except IndexError:
                    raise ImportFileError(f"{name}: frame {frame}: an atom line has too few columns") from None
                if signature != previous:
                    run, position, previous = run + 1, 0, signature
                else:
                    position += 1
                offsets.append(offset)
                runs.append(run)
                in_run.append(position)
                labelled += bool(forces and _ENERGY.search(header))
                offset += len(count_line) + len(header) + sum(len(line) for line in lines)
                frame += 1
    except ImportFileError:
        raise
    except _READ_ERRORS as exc:
        raise ImportFileError(f"{name}: unreadable after frame {frame} ({type(exc).__name__}: {exc})") from None
    if not offsets:
        raise ImportFileError(f"{name}: holds no frame")
    return ExtxyzIndex(
        np.asarray(offsets, dtype=np.int64), np.asarray(runs, dtype=np.int64), np.asarray(in_run, dtype=np.int64),
        labelled,
    )


@dataclass
class SpanFrame:
    frame: int  # index in the file
    run: int
    in_run: int
    atoms: Atoms


def read_span(path: str | Path, name: str, first: int, last: int, wanted: range, offset: int, run: int,
              in_run: int) -> Iterator[SpanFrame]:
    """Frames ``first..last`` (inclusive) of the file; those in ``wanted`` parsed, in file order.

    ``offset``, ``run`` and ``in_run`` describe frame ``first`` (from the index), so a shard needs no other part of
    the file.
    """
    cache: dict[bytes, tuple[int, int, bool]] = {}
    previous: list | None = None
    frame = first
    try:
        with open_text_bytes(path) as raw:
            raw.seek(offset)
            handle = io.TextIOWrapper(raw, encoding="utf-8")
            readline = handle.readline
            while frame <= last:
                count_line = readline()
                natoms = _count(count_line.encode(), name, frame)
                lines = [readline() for _ in range(natoms + 1)]  # header, then one line per atom
                column, _, _ = _columns(lines[0].encode(), cache)
                signature = _signature(lines[1:], column)
                if previous is not None:
                    if signature != previous:
                        run, in_run = run + 1, 0
                    else:
                        in_run += 1
                previous = signature
                if frame in wanted:
                    yield SpanFrame(frame, run, in_run, _parse_frame(count_line, lines, natoms))
                frame += 1
    except ImportFileError:
        raise
    except (*_READ_ERRORS, IndexError, KeyError, StopIteration) as exc:
        raise ImportFileError(f"{name}: frame {frame}: unreadable ({type(exc).__name__}: {exc})") from None


def _parse_frame(count_line: str, lines: list[str], natoms: int) -> Atoms:
    """ASE's parse of one frame. ``ase.io.extxyz._read_xyz_frame`` takes the frame's lines as they are (what
    ``read_xyz`` calls per frame); without it (a future ASE), ``read_xyz`` on the frame's text, which scans it again
    (~20 % slower)."""
    if _READ_FRAME is not None:
        return _READ_FRAME(iter(lines), natoms, key_val_str_to_dict, 0)
    return next(read_xyz(io.StringIO(count_line + "".join(lines)), 0))


def _frame_reader():
    try:
        from ase.io.extxyz import _read_xyz_frame
    except ImportError:
        return None
    parameters = list(inspect.signature(_read_xyz_frame).parameters)
    return _read_xyz_frame if parameters[:4] == ["lines", "natoms", "properties_parser", "nvec"] else None


_READ_FRAME = _frame_reader()
