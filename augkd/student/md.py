"""Molecular dynamics with ASE's integrators: NVE (velocity Verlet) or NVT (Langevin or Bussi), stopped cleanly
when the run becomes unstable (``augkd.student.stability``).

``run_md(atoms, calculator, settings)`` runs; ``md_file(...)`` is ``augkd md``: read the structure, load the model
(student file or teacher spec), check its species, run, write a trajectory and a CSV log.

The log (every ``interval`` steps, and the last step): step, time (ps), potential, kinetic and total energy (eV),
temperature (K), max |F| (eV/Å). NVE runs report the energy drift: the least-squares slope of the total energy
per atom against time, in meV/atom/ps, over every step.
"""

from __future__ import annotations

import csv
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

from augkd.errors import AugkdError
from augkd.student.stability import MAX_FORCE, MIN_DISTANCE, check_stability

ENSEMBLES = ("nve", "nvt")
THERMOSTATS = ("langevin", "bussi")
MAX_TIMESTEP_FS = 10.0
LOG_COLUMNS = ("step", "time_ps", "epot_eV", "ekin_eV", "etot_eV", "temperature_K", "fmax_eV_per_A")


@dataclass(frozen=True)
class MDSettings:
    """One MD run; validated on construction (one-line ``AugkdError``)."""

    ensemble: str = "nvt"  # nve | nvt
    temperature_K: float = 300.0  # initial velocities (Maxwell–Boltzmann) and the NVT target, K
    timestep_fs: float = 1.0  # fs, in (0, 10]
    steps: int = 1000
    thermostat: str = "langevin"  # nvt: langevin | bussi
    friction_per_fs: float = 0.01  # Langevin friction, 1/fs
    taut_fs: float = 100.0  # Bussi time constant, fs
    seed: int = 0  # velocities and thermostat noise
    interval: int = 10  # steps between trajectory frames and log rows
    min_distance: float = MIN_DISTANCE  # Å: closer atoms → unstable
    max_force: float = MAX_FORCE  # eV/Å: a larger force → unstable

    def __post_init__(self):
        if self.ensemble not in ENSEMBLES:
            raise AugkdError(f"--ensemble {self.ensemble}: choose {' or '.join(ENSEMBLES)}")
        if self.thermostat not in THERMOSTATS:
            raise AugkdError(f"--thermostat {self.thermostat}: choose {' or '.join(THERMOSTATS)}")
        if not 0 < self.timestep_fs <= MAX_TIMESTEP_FS:
            raise AugkdError(f"--timestep {self.timestep_fs} fs: must be > 0 and ≤ {MAX_TIMESTEP_FS:g} fs")
        if not self.temperature_K >= 0:
            raise AugkdError(f"--temperature {self.temperature_K} K: must be ≥ 0")
        if self.steps < 0:
            raise AugkdError(f"--steps {self.steps}: must be ≥ 0")
        if self.interval < 1:
            raise AugkdError(f"--interval {self.interval}: must be ≥ 1")
        if not (self.friction_per_fs > 0 and self.taut_fs > 0):
            raise AugkdError(f"thermostat constants must be > 0 (friction {self.friction_per_fs}/fs, taut "
                             f"{self.taut_fs} fs)")


@dataclass
class MDResult:
    """How a run went. ``time_fs`` is the simulated time reached (the whole run when ``stable``)."""

    steps: int  # steps completed
    time_fs: float
    stable: bool
    reason: str | None  # why it stopped early
    seconds: float  # wall time of the steps
    steps_per_s: float
    drift_mev_per_atom_ps: float | None = None  # NVE only
    time_split_ms: dict[str, float] = field(default_factory=dict)  # per step: neighbours, model, rest (students)

    def summary(self) -> dict:
        return {
            "steps": self.steps, "time_ps": round(self.time_fs / 1000, 6), "stable": self.stable,
            "reason": self.reason, "seconds": round(self.seconds, 3), "steps_per_s": round(self.steps_per_s, 3),
            "drift_meV_per_atom_per_ps": None if self.drift_mev_per_atom_ps is None
            else round(self.drift_mev_per_atom_ps, 4),
            "ms_per_step": self.time_split_ms,
        }


class _Unstable(Exception):
    pass


def _integrator(atoms: Atoms, settings: MDSettings, rng: np.random.Generator):
    timestep = settings.timestep_fs * units.fs
    if settings.ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep)
    if settings.thermostat == "bussi":
        from ase.md.bussi import Bussi

        return Bussi(atoms, timestep, temperature_K=settings.temperature_K, taut=settings.taut_fs * units.fs, rng=rng)
    from ase.md.langevin import Langevin

    # fixcm=False: ASE 3.28+ deprecates its centre-of-mass fix, and slabs hold fixed atoms anyway
    return Langevin(atoms, timestep, temperature_K=settings.temperature_K,
                    friction=settings.friction_per_fs / units.fs, fixcm=False, rng=rng)


def thermalize(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell–Boltzmann momenta at ``temperature_K`` (constraints applied), zero total momentum."""
    from ase.md.velocitydistribution import Stationary

    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ASE < 3.29
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    else:
        thermalize_momenta(atoms, temperature_K, rng=rng)
    Stationary(atoms)


def energy_drift(times_ps: np.ndarray, total_per_atom: np.ndarray) -> float | None:
    """Least-squares slope of the total energy per atom (eV) against time (ps), in meV/atom/ps."""
    if len(times_ps) < 2:
        return None
    return float(np.polyfit(times_ps, total_per_atom, 1)[0] * 1000.0)


def run_md(
    atoms: Atoms,
    calculator: Calculator,
    settings: MDSettings,
    trajectory: str | Path | None = None,
    log: str | Path | None = None,
    progress: bool = False,
) -> MDResult:
    """Run ``settings.steps`` steps from ``atoms`` (moved in place), stopping at the first unstable step."""
    from tqdm import tqdm

    from augkd.calculator import AugkdCalculator

    atoms.calc = calculator
    rng = np.random.default_rng(settings.seed)
    thermalize(atoms, settings.temperature_K, rng)
    dynamics = _integrator(atoms, settings, rng)
    writer = None
    if trajectory is not None:
        from ase.io import Trajectory

        writer = Trajectory(str(trajectory), "w", atoms)
    log_file = open(log, "w", newline="") if log is not None else None  # noqa: SIM115 (closed in finally)
    log_writer = csv.writer(log_file) if log_file is not None else None
    if log_writer is not None:
        log_writer.writerow(LOG_COLUMNS)
    bar = tqdm(total=settings.steps, unit="step", disable=not progress, dynamic_ncols=True)
    n = len(atoms)
    student = isinstance(calculator, AugkdCalculator) and calculator.neighbors is not None
    totals: list[float] = []
    reason = None

    def record(step: int, final: bool = False) -> None:
        # one state check (ASE compares the atoms on every property call: ~0.4 ms each); a calculator that did not
        # compute the energy with the forces is asked for it
        forces = atoms.get_forces(apply_constraint=False)
        energy = calculator.results.get("energy")
        energy = atoms.get_potential_energy() if energy is None else energy
        kinetic = atoms.get_kinetic_energy()
        totals.append((energy + kinetic) / n)
        if step % settings.interval == 0 or final:
            if writer is not None:
                writer.write()
            if log_writer is not None:
                fmax = float(np.sqrt((forces**2).sum(axis=1)).max())
                log_writer.writerow([step, f"{step * settings.timestep_fs / 1000:.6f}", f"{energy:.6f}",
                                     f"{kinetic:.6f}", f"{energy + kinetic:.6f}", f"{atoms.get_temperature():.2f}",
                                     f"{fmax:.4f}"])
        # a student's neighbour list already holds every pair within its cutoff (> 0.5 Å): its shortest distance
        shortest = calculator.min_distance if student and calculator.neighbors.cutoff > settings.min_distance else None
        problem = check_stability(atoms, forces, energy, settings.min_distance, settings.max_force, shortest)
        if problem is not None:
            raise _Unstable(problem)

    def observe() -> None:
        step = dynamics.nsteps
        if step > 0:
            bar.update(1)
        record(step, final=step == settings.steps)

    dynamics.attach(observe, interval=1)
    timings_before = dict(calculator.timings) if isinstance(calculator, AugkdCalculator) else None
    start = time.perf_counter()
    try:
        dynamics.run(settings.steps)
    except _Unstable as error:
        reason = str(error)
    finally:
        seconds = time.perf_counter() - start
        bar.close()
        if writer is not None:
            writer.close()
        if log_file is not None:
            log_file.close()
    steps = dynamics.nsteps
    split = {}
    if timings_before is not None and steps > 0:
        after = calculator.timings
        neighbors = (after["neighbors"] - timings_before["neighbors"]) / steps
        model = (after["model"] - timings_before["model"]) / steps
        split = {"neighbors": round(1000 * neighbors, 3), "model": round(1000 * model, 3),
                 "rest": round(1000 * (seconds / steps - neighbors - model), 3)}
    drift = None
    if settings.ensemble == "nve":
        times = np.arange(len(totals)) * settings.timestep_fs / 1000.0
        drift = energy_drift(times, np.asarray(totals))
    return MDResult(
        steps=steps, time_fs=steps * settings.timestep_fs, stable=reason is None, reason=reason, seconds=seconds,
        steps_per_s=steps / seconds if seconds > 0 else 0.0, drift_mev_per_atom_ps=drift, time_split_ms=split,
    )


def md_file(
    structure: str | Path,
    model: str,
    out: str | Path,
    settings: MDSettings,
    log: str | Path | None = None,
    device: str = "auto",
    threads: int | None = None,
    skin: float | None = None,
    allow_unseen: bool = False,
    progress: bool = True,
) -> MDResult:
    """``augkd md``: MD of the structure file with ``model`` (student path or teacher spec); trajectory ``out``
    (.traj) and a CSV log (default: ``out`` with suffix .csv)."""
    from augkd.student.inputs import check_species, load_simulation_model, read_structure

    out = Path(out)
    if out.suffix != ".traj":
        raise AugkdError(f"--out {out}: write the trajectory to a .traj file")
    atoms = read_structure(structure)
    simulation = load_simulation_model(model, device=device, threads=threads, skin=skin)
    check_species(simulation, atoms, allow_unseen)
    if settings.ensemble == "nve" and simulation.conservative is False:
        warnings.warn(f"{simulation.name} predicts forces directly (not −∇E): its energy is not conserved in NVE",
                      stacklevel=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    return run_md(atoms, simulation.calculator, settings, trajectory=out, log=log or out.with_suffix(".csv"),
                  progress=progress)
