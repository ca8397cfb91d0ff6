"""Extended XYZ files (plain or compressed) frame by frame: a cheap index first, then ASE's parser on the frames.

``index_extxyz`` reads the text once without parsing numbers: where each frame starts (byte offset in the
uncompressed text), which *composition run* it belongs to (consecutive frames with the same species column form one
run: a relaxation or an MD trajectory is one run, a file of unrelated structures has one run per change), and
whether its header carries labels (``energy=`` and a ``forces`` column). A file is then cut between shards at any
frame: a shard starts reading at a frame's offset, knowing its run and its place in the run from the index.

``read_span`` turns each frame into what a row needs (``_fast_frame``): the header through ASE's own
``key_val_str_to_dict`` (token by token, repeated tokens such as ``Lattice`` and ``Properties`` parsed once), the atom
block split once and converted column by column with the converters ASE uses (``float``, ``int``, the T/F map), and
one ``Atoms`` with numbers, positions, cell, pbc, tags and ``move_mask`` → FixAtoms, plus the calculator results ASE's
``SinglePointCalculator`` would hold (energy, free_energy, stress in Voigt form, forces). No intermediate Atoms and
no calculator (which copies the Atoms) are built. A frame it does not fully understand (a column type or layout it
does not map, ragged atom lines, an unknown symbol, anything that raises) goes through ASE's own frame parser
instead, so the rows are exactly what ``ase.io.read(file, index=":")`` gives either way.
"""

from __future__ import annotations

import copy
import inspect
import io
import re
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms
from ase.data import atomic_numbers
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
    results: dict[str, Any] | None = None  # fast path: the calculator results (atoms.calc is None); else None


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
                chosen = frame in wanted
                if chosen:  # split once: the composition signature and the fast parse share the tokens
                    rows = list(map(str.split, lines[1:]))
                    signature = [row[column] for row in rows]
                else:
                    signature = _signature(lines[1:], column)
                if previous is not None:
                    if signature != previous:
                        run, in_run = run + 1, 0
                    else:
                        in_run += 1
                previous = signature
                if chosen:
                    parsed = _fast_frame(lines[0], rows, natoms) if _FAST else None
                    if parsed is None:
                        yield SpanFrame(frame, run, in_run, _parse_frame(count_line, lines, natoms))
                    else:
                        yield SpanFrame(frame, run, in_run, *parsed)
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


# -- the fast path ----------------------------------------------------------------------------------------------------
# It mirrors ase.io.extxyz._read_xyz_frame (with nvec=0) followed by set_calc_and_arrays and SinglePointCalculator,
# for the frames whose every step it can reproduce; tests/io/test_extxyz_fast_parse.py compares the two on many files.
def _ase_tables():
    try:
        from ase.io.extxyz import REV_PROPERTY_NAME_MAP, per_atom_properties, per_config_properties
    except ImportError:
        return None
    return dict(REV_PROPERTY_NAME_MAP), frozenset(per_atom_properties), tuple(per_config_properties)


_TABLES = _ase_tables()
_FAST = _READ_FRAME is not None and _TABLES is not None  # the ASE whose frame reader the fast path mirrors
_BOOLS = {"T": True, "F": False, "True": True, "False": False}  # ASE's L converter (others become False there)
_INT32 = (-(2**31), 2**31 - 1)  # ASE stores I columns as int32
_KEPT_RESULTS = ("energy", "magmom", "free_energy")  # SinglePointCalculator keeps these as given, others as floats

# A header made only of tokens ``key``, ``key=value`` or ``key="value"`` (a plain character set, no escapes, no other
# delimiters, a non-empty value) separated by spaces or tabs: ASE's character-by-character parser gives each token
# the entry it gives the token alone, so the header's dict is the tokens' dicts merged in order (a repeated key keeps
# its first place and takes the last value, as in ASE's dict). Any other header is parsed whole.
_KEY = r"[A-Za-z0-9_.+\-]+"
_VALUE = r'(?:[A-Za-z0-9_.+\-:,]+|"[A-Za-z0-9_.+\-:, ]+")'
_TOKEN = re.compile(rf"{_KEY}(?:={_VALUE})?")
_SIMPLE_HEADER = re.compile(rf"{_TOKEN.pattern}(?:[ \t]+{_TOKEN.pattern})*")
_TOKEN_CACHE: dict[str, dict[str, Any]] = {}
_TOKEN_CACHE_SIZE = 4096


def _header_dict(line: str) -> dict[str, Any]:
    """``key_val_str_to_dict(line)`` (``line`` stripped, non-empty); repeated tokens are parsed once."""
    if not _SIMPLE_HEADER.fullmatch(line):
        return key_val_str_to_dict(line)
    info: dict[str, Any] = {}
    for token in _TOKEN.findall(line):
        parsed = _TOKEN_CACHE.get(token)
        if parsed is None:
            parsed = key_val_str_to_dict(token)
            if len(_TOKEN_CACHE) >= _TOKEN_CACHE_SIZE:
                _TOKEN_CACHE.clear()
            _TOKEN_CACHE[token] = parsed
        for key, value in parsed.items():  # copies: the caller owns what it gets, the cache keeps its own
            if isinstance(value, np.ndarray):
                value = value.copy()
            elif isinstance(value, (list, dict)):
                value = copy.deepcopy(value)
            info[key] = value
    return info


@dataclass(frozen=True)
class _Layout:
    """Where a row's columns are in the atom lines of a ``Properties`` layout (column indices)."""

    width: int  # columns per atom line
    species: int | None
    numbers: int | None  # Z
    positions: int
    forces: int | None
    tags: int | None
    move_mask: int | None
    checked: tuple[tuple[str, int, int], ...]  # (type, first column, columns) of the others: converted, then dropped


_LAYOUTS: dict[str, _Layout | None] = {}
_ROW_COLUMNS = {"symbols": ("S", 1), "numbers": ("I", 1), "positions": ("R", 3), "forces": ("R", 3),
                "tags": ("I", 1), "move_mask": ("L", 1)}


def _layout(spec: Any) -> _Layout | None:
    """The layout of a ``Properties`` value, or None when the fast path does not map it (the frame falls back)."""
    if not isinstance(spec, str):
        return None
    if spec in _LAYOUTS:
        return _LAYOUTS[spec]
    if len(_LAYOUTS) >= 256:  # a file rarely has more than a few layouts; a bound all the same
        _LAYOUTS.clear()
    found = _LAYOUTS[spec] = _map_layout(spec)
    return found


def _map_layout(spec: str) -> _Layout | None:
    rename, per_atom, per_config = _TABLES
    fields = spec.split(":")
    if len(fields) % 3:
        return None
    where: dict[str, int] = {}
    checked: list[tuple[str, int, int]] = []
    names: set[str] = set()
    column = 0
    for name, kind, text in zip(fields[::3], fields[1::3], fields[2::3]):
        try:
            cols = int(text)
        except ValueError:
            return None
        name = rename.get(name, name)
        if cols < 1 or kind not in ("R", "I", "S", "L") or name in names:
            return None
        names.add(name)
        if name in _ROW_COLUMNS:
            if _ROW_COLUMNS[name] != (kind, cols):
                return None
            where[name] = column
        elif name == "initial_charges" or name in per_atom:
            # Atoms(charges=...) or SinglePointCalculator's float arrays: numbers and booleans only
            if kind == "S" or (name == "initial_charges" and cols != 1):
                return None
            checked.append((kind, column, cols))
        elif name in per_config:  # a per-atom column named like energy or stress would reach the results
            return None
        else:  # atoms.new_array(name, ...): any type
            checked.append((kind, column, cols))
        column += cols
    if "positions" not in where or ("symbols" in where) == ("numbers" in where):
        return None
    return _Layout(column, where.get("symbols"), where.get("numbers"), where["positions"], where.get("forces"),
                   where.get("tags"), where.get("move_mask"), tuple(checked))


_SYMBOLS: dict[str, int] = {}  # species token → atomic number, as ASE maps it (capitalized)


def _numbers_of(species: tuple[str, ...]) -> list[int]:
    try:
        return [_SYMBOLS[token] for token in species]
    except KeyError:
        for token in set(species):
            if token not in _SYMBOLS:
                _SYMBOLS[token] = atomic_numbers[token.capitalize()]  # KeyError: ASE fails here too
        return [_SYMBOLS[token] for token in species]


def _ints(column: tuple[str, ...]) -> np.ndarray:
    values = list(map(int, column))
    if min(values) < _INT32[0] or max(values) > _INT32[1]:
        raise OverflowError("outside int32")
    return np.array(values, dtype=np.int32)


def _floats(columns: list[tuple[str, ...]], first: int, count: int) -> np.ndarray:
    """(natoms, count) float64 array of ``count`` columns (Python's ``float`` of each token, as ASE converts them),
    laid out as ASE's ``np.vstack(...).T``."""
    natoms = len(columns[first])
    values = np.fromiter(map(float, chain.from_iterable(columns[first:first + count])), float, natoms * count)
    return values.reshape(count, natoms).T


def _fast_frame(header: str, rows: list[list[str]], natoms: int) -> tuple[Atoms, dict[str, Any]] | None:
    """(atoms, calculator results) of a frame, as ASE's parser + ``SinglePointCalculator`` would give them; None
    when the frame must go through ASE's parser (anything not mapped here, and every error)."""
    try:
        return _fast_frame_or_raise(header, rows, natoms)
    except Exception:
        return None


def _fast_frame_or_raise(header: str, rows: list[list[str]], natoms: int) -> tuple[Atoms, dict[str, Any]] | None:
    if natoms < 1:
        return None
    line = header.strip()
    info = _header_dict(line) if line else {}
    pbc = None
    if "pbc" in info:
        pbc = info.pop("pbc")
    elif "Lattice" in info:
        pbc = [True, True, True]
    cell = info.pop("Lattice").T if "Lattice" in info else None
    layout = _layout(info.pop("Properties", "species:S:1:pos:R:3"))
    if layout is None or set(map(len, rows)) != {layout.width}:
        return None  # ASE ignores tokens past the layout's columns; ragged lines are left to it
    columns = list(zip(*rows))
    for kind, first, count in layout.checked:  # ASE converts every column: what fails there must fail here
        for column in columns[first:first + count]:
            if kind == "R":
                list(map(float, column))
            elif kind == "I":
                _ints(column)
            elif kind == "L" and not set(column) <= _BOOLS.keys():
                return None
    if layout.species is not None:
        numbers = _numbers_of(columns[layout.species])
    else:
        numbers = _ints(columns[layout.numbers])
    tags = _ints(columns[layout.tags]) if layout.tags is not None else None
    move_mask = None
    if layout.move_mask is not None:
        move_mask = np.array([_BOOLS[token] for token in columns[layout.move_mask]], dtype=bool)
    forces = _floats(columns, layout.forces, 3) if layout.forces is not None else None
    positions = _floats(columns, layout.positions, 3)

    results: dict[str, Any] = {}
    if forces is not None:
        results["forces"] = np.array(forces, float)
    for key in list(info):
        if key in _TABLES[2]:
            value = info.pop(key)
            if key == "stress" and value.shape == (3, 3):
                value = np.array([value[0, 0], value[1, 1], value[2, 2], value[1, 2], value[0, 2], value[0, 1]])
            if value is None:
                continue
            results[key] = value if key in _KEPT_RESULTS else np.array(value, float)

    atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc, info=info)
    if move_mask is not None:
        atoms.set_constraint(FixAtoms(mask=~move_mask))
    if tags is not None:
        atoms.new_array("tags", tags)
    return atoms, results
