"""The one record every stage passes along: a labelled frame.

Generators make them, io writes and reads them, mixers and trainers consume them. It lives outside the stage
packages so that every stage can import it without importing a later stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms

#: Keys every augkd row carries in its ``data`` dict (see shared spec, formats.md).
PROVENANCE_KEYS = ("sid", "fid", "origin", "teacher", "system_seed", "relax_step")


@dataclass
class LabelledFrame:
    """One structure with its labels and provenance.

    atoms: numbers, positions (Å), cell (Å), pbc, tags (0 fixed subsurface, 1 surface, 2 adsorbate) and a
        FixAtoms constraint for the fixed atoms. No calculator attached.
    energy: total energy (eV).
    forces: (N, 3) forces (eV/Å), on every atom, fixed ones included (unconstrained).
    data: provenance and extras stored in the row's ``data`` dict: ``sid`` (str), ``fid`` (int), ``origin`` (str),
        ``teacher`` (str), ``system_seed`` (int), ``relax_step`` (int), and optional per-atom arrays.
    """

    atoms: Atoms
    energy: float
    forces: np.ndarray
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def fixed(self) -> np.ndarray:
        """Boolean mask of atoms held by FixAtoms."""
        return fixed_mask(self.atoms)


def fixed_mask(atoms: Atoms) -> np.ndarray:
    mask = np.zeros(len(atoms), dtype=bool)
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            mask[constraint.get_indices()] = True
    return mask


def plain_atoms(atoms: Atoms) -> Atoms:
    """A bare ``ase.Atoms`` copy: numbers, positions, cell, pbc, tags and FixAtoms; no calculator, no info.

    fairchem-data-oc hands out pymatgen's MSONAtoms with extra arrays; rows must hold only what survives a
    database round trip.
    """
    out = Atoms(
        numbers=atoms.get_atomic_numbers(),
        positions=atoms.get_positions(),
        cell=np.asarray(atoms.get_cell()),
        pbc=atoms.get_pbc(),
        tags=atoms.get_tags(),
    )
    mask = fixed_mask(atoms)
    if mask.any():
        out.set_constraint(FixAtoms(indices=np.flatnonzero(mask)))
    return out
