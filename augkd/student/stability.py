"""When a simulation has gone wrong: two atoms closer than 0.5 Å, a force above 50 eV/Å, or non-finite numbers.

Distilled potentials can be accurate on a test set and still let atoms collapse or fly apart after some
picoseconds of MD; ``check_stability`` is what the MD runner asks after every step.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from augkd.student.neighbors import pair_list

MIN_DISTANCE = 0.5  # Å
MAX_FORCE = 50.0  # eV/Å


#: Å: the pair search runs at least this far: a cell list with 0.5 Å bins over a slab's vacuum is 50–100× slower
#: (62 atoms: 10 ms at 0.5 Å, 0.2 ms at 2 Å; 1000 atoms: 195 vs 1.6 ms) than one with 2 Å bins
SEARCH_RADIUS = 2.0


def min_distance(atoms: Atoms, within: float = MIN_DISTANCE) -> float:
    """The shortest interatomic distance (periodic images included) if below ``within`` Å, else ``inf``."""
    i, j, image = pair_list(atoms.positions, atoms.cell.array, atoms.pbc, max(within, SEARCH_RADIUS))
    if i.size == 0:
        return float("inf")
    vectors = atoms.positions[j] - atoms.positions[i] + image @ atoms.cell.array
    shortest = float(np.sqrt(np.einsum("ij,ij->i", vectors, vectors).min()))
    return shortest if shortest < within else float("inf")


def check_stability(
    atoms: Atoms,
    forces: np.ndarray,
    energy: float,
    min_allowed: float = MIN_DISTANCE,
    max_force: float = MAX_FORCE,
    shortest: float | None = None,
) -> str | None:
    """Why ``atoms`` (with its ``forces`` in eV/Å and ``energy`` in eV) is unstable, in a few words; None if not.

    ``shortest``: the shortest interatomic distance (Å) when the caller knows it (a student's neighbour list),
    else it is searched for."""
    if not (np.isfinite(energy) and np.isfinite(forces).all() and np.isfinite(atoms.positions).all()):
        return "non-finite energy, forces or positions"
    largest = float(np.sqrt(np.einsum("ij,ij->i", forces, forces)).max(initial=0.0))
    if largest > max_force:
        return f"max |F| {largest:.1f} eV/Å > {max_force:g} eV/Å"
    shortest = min_distance(atoms, min_allowed) if shortest is None else shortest
    if shortest < min_allowed:
        return f"min interatomic distance {shortest:.2f} Å < {min_allowed:g} Å"
    return None
