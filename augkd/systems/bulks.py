"""Bulk crystals that slabs are cut from: a built-in library and user bulk files.

fairchem-data-oc only needs ``Bulk(bulk_atoms=...)``; its own bulks.pkl is not shipped and must never be
downloaded, so augkd carries a small library of its own (elemental metals, ordered intermetallics, oxides) and
reads OC20-style bulks.pkl files or any ASE-readable structure file a user points it at.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.data import chemical_symbols, reference_states
from ase.spacegroup import crystal

from augkd.errors import ConfigError
from augkd.safe_pickle import UnsafePickleError, restricted_load

log = logging.getLogger(__name__)


class BulkFileError(ConfigError):
    """A bulk file or directory that cannot be turned into periodic bulk structures."""


class _UnreadableFile(BulkFileError):
    # Format or parse failure: a directory scan skips such files (READMEs, notes), while an unsafe pickle or a
    # non-periodic structure stays an error there too.
    pass


@dataclass(frozen=True)
class BulkEntry:
    name: str
    atoms: Atoms
    source: str

    @property
    def elements(self) -> frozenset[str]:
        return frozenset(self.atoms.get_chemical_symbols())


# --------------------------------------------------------------------------------------------------------------
# Built-in library
# --------------------------------------------------------------------------------------------------------------

# Elemental metals take ASE's reference state (ase.data.reference_states); only those ASE lists as fcc, bcc or hcp
# are kept, which drops Mn (alpha-Mn) and Hg (rhombohedral). Tc (radioactive) and the lanthanides, La included,
# are left out on purpose.
_METALS = (
    "Sc", "Ti", "V", "Cr", "Fe", "Co", "Ni", "Cu", "Zn",
    "Y", "Zr", "Nb", "Mo", "Ru", "Rh", "Pd", "Ag", "Cd",
    "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au",
    "Al", "Pb",
    "Be", "Mg", "Ca", "Sr", "Ba",
)  # fmt: skip

# Ordered binaries, experimental room-temperature lattice constants (Å).
# B2 / CsCl (Pm-3m): A at (0,0,0), B at (1/2,1/2,1/2).                        name: (A, B, a)
_B2 = {
    "NiAl": ("Ni", "Al", 2.887),
    "CoAl": ("Co", "Al", 2.862),
    "FeAl": ("Fe", "Al", 2.909),
    "CuZn": ("Cu", "Zn", 2.950),  # beta'-brass
    "CuPd": ("Cu", "Pd", 2.988),
    "NiTi": ("Ni", "Ti", 3.015),  # austenite
    "FeCo": ("Fe", "Co", 2.857),
}
# L1_2 / Cu3Au (Pm-3m, 221): minority B at 1a (0,0,0), majority A at 3c (0,1/2,1/2).    name: (A, B, a)
_L12 = {
    "Cu3Au": ("Cu", "Au", 3.748),
    "Au3Cu": ("Au", "Cu", 3.985),
    "Ni3Al": ("Ni", "Al", 3.572),
    "Cu3Pt": ("Cu", "Pt", 3.686),
    "Cu3Pd": ("Cu", "Pd", 3.690),
    "Pt3Ti": ("Pt", "Ti", 3.898),
    "Pd3Fe": ("Pd", "Fe", 3.851),
    "Pt3Fe": ("Pt", "Fe", 3.866),
    "Ni3Fe": ("Ni", "Fe", 3.550),
}
# L1_0 / CuAu-I (P4/mmm, 123): a, c of the face-centred tetragonal cell; built as its 2-atom primitive
# (a/sqrt2, a/sqrt2, c) with A at 1a (0,0,0), B at 1d (1/2,1/2,1/2).                     name: (A, B, a, c)
_L10 = {
    "CuAu": ("Cu", "Au", 3.966, 3.673),
    "FePt": ("Fe", "Pt", 3.853, 3.713),
    "CoPt": ("Co", "Pt", 3.803, 3.701),
    "FePd": ("Fe", "Pd", 3.852, 3.723),
    "NiPt": ("Ni", "Pt", 3.822, 3.587),
}
# Rocksalt (Fm-3m), 2-atom primitive cell.                                                name: a
_ROCKSALT = {"NiO": 4.177, "MgO": 4.212, "CoO": 4.260, "MnO": 4.445, "CaO": 4.810}
# Rutile (P4_2/mnm, 136): M at 2a (0,0,0), O at 4f (u,u,0).                               name: (M, a, c, u)
_RUTILE = {
    "TiO2": ("Ti", 4.594, 2.959, 0.3049),
    "SnO2": ("Sn", 4.737, 3.186, 0.3070),
    "RuO2": ("Ru", 4.492, 3.106, 0.3058),
    "IrO2": ("Ir", 4.498, 3.154, 0.3080),
    "MnO2": ("Mn", 4.398, 2.873, 0.3046),  # pyrolusite
}
# Wurtzite (P6_3mc).                                                                      name: (a, c, u)
_WURTZITE = {"ZnO": (3.250, 5.207, 0.382)}


def _cubic(a: float) -> list[float]:
    return [a, a, a, 90, 90, 90]


def _builtin_specs() -> Iterable[tuple[str, str, Atoms]]:
    for symbol in _METALS:
        structure = reference_states[chemical_symbols.index(symbol)]["symmetry"]
        if structure in ("fcc", "bcc", "hcp"):
            yield f"{symbol}-{structure}", structure, bulk(symbol)
    for name, (a_el, b_el, a) in _B2.items():
        yield f"{name}-B2", "B2", bulk(f"{a_el}{b_el}", "cesiumchloride", a=a)
    for name, (a_el, b_el, a) in _L12.items():
        yield f"{name}-L12", "L12", crystal([b_el, a_el], [(0, 0, 0), (0, 0.5, 0.5)], spacegroup=221, cellpar=_cubic(a))
    for name, (a_el, b_el, a, c) in _L10.items():
        t = a / np.sqrt(2)
        yield f"{name}-L10", "L10", crystal(
            [a_el, b_el], [(0, 0, 0), (0.5, 0.5, 0.5)], spacegroup=123, cellpar=[t, t, c, 90, 90, 90]
        )
    for name, a in _ROCKSALT.items():
        yield f"{name}-rocksalt", "rocksalt", bulk(name, "rocksalt", a=a)
    for name, (metal, a, c, u) in _RUTILE.items():
        yield f"{name}-rutile", "rutile", crystal(
            [metal, "O"], [(0, 0, 0), (u, u, 0)], spacegroup=136, cellpar=[a, a, c, 90, 90, 90]
        )
    for name, (a, c, u) in _WURTZITE.items():
        yield f"{name}-wurtzite", "wurtzite", bulk(name, "wurtzite", a=a, c=c, u=u)


@lru_cache(maxsize=1)
def _builtin_cached() -> tuple[BulkEntry, ...]:
    return tuple(BulkEntry(name, _bare(atoms), f"builtin:{proto}") for name, proto, atoms in _builtin_specs())


def builtin_bulks() -> list[BulkEntry]:
    """augkd's built-in bulk library, in a fixed order; the Atoms are fresh copies the caller may modify."""
    return [replace(entry, atoms=entry.atoms.copy()) for entry in _builtin_cached()]


# --------------------------------------------------------------------------------------------------------------
# User bulk files
# --------------------------------------------------------------------------------------------------------------

_PICKLE_SUFFIXES = (".pkl", ".pickle")


def load_bulks(path: str | os.PathLike) -> list[BulkEntry]:
    """Read bulks from an OC20-style bulks.pkl, any ASE-readable structure file, or a directory of such files.

    Names are the pickle's ``src_id`` (``bulk-<i>`` without one) or the file stem (``stem:<i>`` for files holding
    several images), suffixed ``_2``, ``_3``, ... where they repeat. Raises BulkFileError (one line, naming the
    path) for a missing, unreadable, unsafe or empty input, or for a structure without a 3D periodic cell.
    """
    path = Path(path)
    if not path.exists():
        raise BulkFileError(f"bulk file not found: {path}")
    if not path.is_dir():
        return _unique(_read_file(path))
    entries: list[BulkEntry] = []
    for file in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            entries += _read_file(file)
        except _UnreadableFile as err:
            log.warning("skipping %s", err)
    if not entries:
        raise BulkFileError(f"{path}: directory holds no readable bulk structure files")
    return _unique(entries)


def _read_file(path: Path) -> list[BulkEntry]:
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raw = _read_pickle(path)
    else:
        try:
            images = ase.io.read(path, index=":")
        except Exception as err:  # ASE raises anything from UnknownFileTypeError to IndexError on bad input
            raise _UnreadableFile(f"{path}: cannot read as a structure file ({_one_line(err)})") from err
        if len(images) == 1:
            raw = [(path.stem, images[0], str(path))]
        else:
            raw = [(f"{path.stem}:{i}", atoms, f"{path}:{i}") for i, atoms in enumerate(images)]
    if not raw:
        raise _UnreadableFile(f"{path}: holds no structures")
    return [BulkEntry(name, _checked(atoms, path, name), source) for name, atoms, source in raw]


def _read_pickle(path: Path) -> list[tuple[str, Atoms, str]]:
    try:
        with open(path, "rb") as fh:
            db = restricted_load(fh)
    except UnsafePickleError as err:
        raise BulkFileError(f"{path}: unsafe pickle, {_one_line(err)}") from err
    except Exception as err:
        raise _UnreadableFile(f"{path}: cannot unpickle ({_one_line(err)})") from err
    if not isinstance(db, (list, tuple)):
        raise _UnreadableFile(f"{path}: expected a list of bulk entries, got {type(db).__name__}")
    raw = []
    for i, item in enumerate(db):
        atoms, src_id = (item.get("atoms"), item.get("src_id")) if isinstance(item, dict) else (item, None)
        if not isinstance(atoms, Atoms):
            raise BulkFileError(f"{path}: entry {i} is neither ase.Atoms nor a dict with an 'atoms' Atoms")
        raw.append((str(src_id) if src_id else f"bulk-{i}", atoms, f"{path}:{i}"))
    return raw


def _checked(atoms: Atoms, path: Path, name: str) -> Atoms:
    try:
        out = _bare(atoms, pbc=atoms.pbc)
    except Exception as err:  # e.g. an Atoms pickled by an ancient ASE with other attribute names
        raise BulkFileError(f"{path}: entry {name!r} is not a usable ase.Atoms ({_one_line(err)})") from err
    if len(out) == 0 or not out.pbc.all() or out.cell.volume < 1e-3:
        raise BulkFileError(
            f"{path}: entry {name!r} is not a 3D periodic bulk (pbc={out.pbc.tolist()}, "
            f"cell volume {out.cell.volume:.3g} Å^3, {len(out)} atoms)"
        )
    out.pbc = True
    return out


def _bare(atoms: Atoms, pbc=True) -> Atoms:
    """Numbers, positions and cell only: no constraints, calculator, info or extra arrays."""
    return Atoms(
        numbers=np.asarray(atoms.numbers),
        positions=np.asarray(atoms.positions, dtype=float),
        cell=np.asarray(atoms.cell, dtype=float),
        pbc=pbc,
    )


def _unique(entries: list[BulkEntry]) -> list[BulkEntry]:
    originals = {e.name for e in entries}  # a later "Cu_2" from the file keeps its own name
    used: set[str] = set()
    out = []
    for entry in entries:
        name, k = entry.name, 2
        while name in used or (name != entry.name and name in originals):
            name, k = f"{entry.name}_{k}", k + 1
        used.add(name)
        out.append(entry if name == entry.name else replace(entry, name=name))
    return out


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


# --------------------------------------------------------------------------------------------------------------
# Selection and caching
# --------------------------------------------------------------------------------------------------------------


def filter_bulks(bulks: Iterable[BulkEntry], allowed_elements: Collection[str] | None) -> list[BulkEntry]:
    """The bulks made only of ``allowed_elements`` (all of them when None), in their original order."""
    if allowed_elements is None:
        return list(bulks)
    allowed = frozenset(allowed_elements)
    unknown = sorted(allowed - set(chemical_symbols[1:]))
    if unknown:  # a typo such as "CU" would otherwise silently filter everything away
        raise ConfigError(f"unknown element symbols in allowed_elements: {unknown}")
    return [b for b in bulks if b.elements <= allowed]


def bulk_fingerprint(atoms: Atoms) -> str:
    """sha256 over atomic numbers, cell and wrapped scaled positions, both on a 1e-6 grid: a slab-cache key."""
    cell = np.rint(np.asarray(atoms.cell, dtype=float) * 1e6).astype(np.int64)
    # Integers rather than rounded floats: no -0.0 vs 0.0, and 0.9999999 folds onto 0 after rounding.
    scaled = np.rint(atoms.get_scaled_positions(wrap=True) * 1e6).astype(np.int64) % 1_000_000
    h = hashlib.sha256()
    for part in (np.asarray(atoms.numbers, dtype=np.int64), cell, scaled):
        h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()
