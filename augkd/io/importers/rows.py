"""A source frame → an augkd row (or a counted drop), and the counts a shard reports.

A row keeps numbers, positions (Å), cell (Å), pbc, tags and FixAtoms (what ``augkd.records.plain_atoms`` keeps), the energy (eV;
the calculator's ``energy``, else its ``free_energy``) and forces (eV/Å) as the file gives them, and in ``data``:
``sid``, ``fid``, ``origin``, ``source`` (path relative to the import root), ``frame`` (index in the file),
``stress`` (3×3, eV/Å³, ASE's sign convention; only when the file has it: fairchem's ``AtomicData.from_ase`` reads it
from there) and, for OC20 S2EF, ``reference_energy`` (eV; with ``--energy adsorption`` the row's energy is the DFT
total minus it).

Drops, by reason: ``no_energy``, ``no_forces``, ``non_finite`` (energy, forces, stress, positions or cell), and with
``--strict`` ``no_fixed_or_tags`` (neither a FixAtoms constraint nor a non-zero tag). With ``--strict`` a frame
without energy or forces, or with non-finite values, refuses the whole import instead.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms
from ase.stress import voigt_6_to_full_3x3_stress

from augkd.io.importers.discover import ImportFileError
from augkd.io.importers.readers import SourceFrame
from augkd.records import LabelledFrame, fixed_mask

_KEPT_ARRAYS = ("numbers", "positions", "tags")
DROP_REASONS = ("no_energy", "no_forces", "non_finite", "no_fixed_or_tags")


@dataclass
class Tally:
    """What one shard read, kept and dropped; ``stats()`` is what the shard's sidecar and the manifest sum."""

    frames_read: int = 0
    frames_kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    by_source: Counter = field(default_factory=Counter)
    without_fixed_or_tags: int = 0

    def stats(self) -> dict[str, Any]:
        return {
            "frames_read": self.frames_read,
            "frames_kept": self.frames_kept,
            "dropped_frames": dict(sorted(self.dropped.items())),
            "rows_by_source": dict(sorted(self.by_source.items())),
            "rows_without_fixed_or_tags": self.without_fixed_or_tags,
        }


@dataclass(frozen=True)
class RowRules:
    origin: str
    energy: str  # total | adsorption
    strict: bool


def _stress(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    stress = np.asarray(value, dtype=np.float64)
    if stress.shape == (6,):
        return voigt_6_to_full_3x3_stress(stress)
    if stress.size == 9:
        return stress.reshape(3, 3)
    return None


def _finite(*values: Any) -> bool:
    return all(np.isfinite(v).all() for v in values if v is not None)


def _bare(atoms: Atoms) -> Atoms:
    """``atoms`` (a freshly read object, owned here) stripped to what ``augkd.records.plain_atoms`` keeps: numbers,
    positions, cell, pbc, tags and FixAtoms; no calculator, info or other arrays. In place: no copy per row."""
    mask = fixed_mask(atoms)
    atoms.calc = None
    atoms.info = {}
    for key in [key for key in atoms.arrays if key not in _KEPT_ARRAYS]:
        del atoms.arrays[key]
    atoms.constraints = [FixAtoms(indices=np.flatnonzero(mask))] if mask.any() else []
    return atoms


def to_row(item: SourceFrame, source: str, rules: RowRules, tally: Tally) -> LabelledFrame | None:
    """The row of ``item``, or None when it is dropped (counted in ``tally``); ``ImportFileError`` under --strict."""
    tally.frames_read += 1
    atoms = item.atoms
    results = item.results
    if results is None:
        results = atoms.calc.results if atoms.calc is not None else {}
    energy = results.get("energy", results.get("free_energy"))
    forces = results.get("forces")
    stress = _stress(results.get("stress"))
    reason = None
    if energy is None:
        reason = "no_energy"
    elif forces is None:
        reason = "no_forces"
    else:
        energy = float(energy)
        forces = np.asarray(forces, dtype=np.float64)
        if forces.shape != (len(atoms), 3):
            raise ImportFileError(f"{source}: frame {item.frame}: forces of shape {forces.shape} for "
                                  f"{len(atoms)} atoms")
        if not (math.isfinite(energy) and _finite(forces, stress, atoms.positions, atoms.cell.array)
                and (item.reference_energy is None or math.isfinite(item.reference_energy))):
            reason = "non_finite"
    if reason is not None and rules.strict:
        raise ImportFileError(f"{source}: frame {item.frame}: {reason.replace('_', ' ')} "
                              "(--strict refuses frames without energy or forces, or with non-finite values)")
    row_atoms = _bare(atoms)
    described = bool(row_atoms.constraints or row_atoms.get_tags().any())
    if reason is None and not described and rules.strict:
        reason = "no_fixed_or_tags"
    if reason is not None:
        tally.dropped[reason] += 1
        return None
    tally.without_fixed_or_tags += not described
    data: dict[str, Any] = {"sid": item.sid, "fid": int(item.fid), "origin": rules.origin, "source": source,
                            "frame": int(item.frame)}
    if item.reference_energy is not None:
        data["reference_energy"] = float(item.reference_energy)
        if rules.energy == "adsorption":
            energy -= float(item.reference_energy)
    if stress is not None:
        data["stress"] = stress
    tally.frames_kept += 1
    tally.by_source[source] += 1
    return LabelledFrame(atoms=row_atoms, energy=energy, forces=forces, data=data)
