"""Relaxations with ASE's optimizers (BFGS, FIRE, LBFGS, BFGSLineSearch), FixAtoms respected.

``relax(atoms, calculator, ...)`` relaxes; ``relax_file(...)`` is ``augkd relax``: read the structure, load the
model (student file or teacher spec), check its species, relax, write the trajectory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from augkd.errors import AugkdError

OPTIMIZERS = ("BFGS", "FIRE", "LBFGS", "BFGSLineSearch")


@dataclass
class RelaxResult:
    converged: bool
    steps: int
    energy: float  # eV, final
    fmax: float  # eV/Å, final max |F| over free atoms
    seconds: float

    def summary(self) -> dict:
        return {"converged": self.converged, "steps": self.steps, "energy_eV": round(self.energy, 6),
                "fmax_eV_per_A": round(self.fmax, 5), "seconds": round(self.seconds, 3)}


def check_relax_settings(fmax: float, steps: int, optimizer: str) -> None:
    if not fmax > 0:
        raise AugkdError(f"--fmax {fmax} eV/Å: must be > 0")
    if steps < 0:
        raise AugkdError(f"--steps {steps}: must be ≥ 0")
    if optimizer not in OPTIMIZERS:
        raise AugkdError(f"--optimizer {optimizer}: choose {', '.join(OPTIMIZERS)}")


def relax(
    atoms: Atoms,
    calculator: Calculator,
    fmax: float = 0.05,
    steps: int = 200,
    optimizer: str = "BFGS",
    trajectory: str | Path | None = None,
    logfile: str | None = None,
) -> RelaxResult:
    """Relax ``atoms`` in place until max |F| over free atoms ≤ ``fmax`` (eV/Å) or ``steps`` steps."""
    import ase.optimize
    from ase.io import Trajectory

    check_relax_settings(fmax, steps, optimizer)
    atoms.calc = calculator
    dynamics = getattr(ase.optimize, optimizer)(atoms, logfile=logfile)
    writer = None if trajectory is None else Trajectory(str(trajectory), "w", atoms)
    if writer is not None:
        dynamics.attach(writer.write, interval=1)  # every step, the start included
    start = time.perf_counter()
    try:
        converged = bool(dynamics.run(fmax=fmax, steps=steps))
    finally:
        seconds = time.perf_counter() - start
        if writer is not None:
            writer.close()
    forces = atoms.get_forces()  # constraints applied: fixed atoms do not count
    return RelaxResult(
        converged=converged, steps=dynamics.nsteps, energy=float(atoms.get_potential_energy()),
        fmax=float(np.sqrt((forces**2).sum(axis=1)).max(initial=0.0)), seconds=seconds,
    )


def relax_file(
    structure: str | Path,
    model: str,
    out: str | Path,
    fmax: float = 0.05,
    steps: int = 200,
    optimizer: str = "BFGS",
    device: str = "auto",
    threads: int | None = None,
    allow_unseen: bool = False,
    logfile: str | None = None,
) -> RelaxResult:
    """``augkd relax``: relax the structure file with ``model`` (student path or teacher spec) into ``out``
    (.traj: every step; the last frame is the relaxed structure)."""
    from augkd.student.inputs import check_species, load_simulation_model, read_structure

    check_relax_settings(fmax, steps, optimizer)
    out = Path(out)
    if out.suffix != ".traj":
        raise AugkdError(f"--out {out}: write the trajectory to a .traj file")
    atoms = read_structure(structure)
    simulation = load_simulation_model(model, device=device, threads=threads)
    check_species(simulation, atoms, allow_unseen)
    out.parent.mkdir(parents=True, exist_ok=True)
    return relax(atoms, simulation.calculator, fmax, steps, optimizer, trajectory=out, logfile=logfile)
