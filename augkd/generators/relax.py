"""Relaxation runs and what they record; the ASE relaxer (one system at a time, any ``ase.optimize`` optimizer).

Both relaxers speak one contract: ``runner(systems, teacher, config, batching, capture=None)`` yields
``(index, Trajectory)`` pairs as runs end (``relax_each`` here, in index order; ``relax_batched`` in
``augkd.generators.relax_batched``, in the order systems finish). ``augkd.generators.relax_batched.choose_relaxer``
says which one a generation runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from augkd.errors import ConfigError
from augkd.teachers import Teacher

if TYPE_CHECKING:
    from augkd.generators.inflight import BatchConfig


DEFAULT_ASE_OPTIMIZER = "BFGS"


@dataclass(frozen=True)
class RelaxConfig:
    # An ase.optimize class name; None: the relaxer's own (FIRE for the batched relaxer, BFGS for ASE's).
    optimizer: str | None = None
    fmax: float = 0.03  # eV/Å, largest force on a free atom at convergence
    steps: int = 200  # optimizer steps at most

    def __post_init__(self) -> None:
        if self.optimizer is not None:
            optimizer_class(self.optimizer)
        if not self.fmax > 0:
            raise ConfigError(f"fmax={self.fmax} must be > 0")
        if self.steps < 0:
            raise ConfigError(f"steps={self.steps} must be >= 0")


@dataclass
class Frame:
    positions: np.ndarray  # (N, 3) Å
    energy: float  # eV
    forces: np.ndarray  # (N, 3) eV/Å, unconstrained
    step: int  # optimizer step that produced it (0 = the starting structure)
    # Teacher outputs beyond energy and forces computed in the same forward pass ("atom_energy" (N,) eV, feature
    # name -> (N, ...)), on the frames a caller asked to capture; None elsewhere.
    outputs: dict[str, np.ndarray] | None = None


@dataclass
class Trajectory:
    frames: list[Frame] = field(default_factory=list)
    converged: bool = False
    failure: str | None = None  # "calculator_error" or "nonfinite_labels"; None when the run ended normally
    error: str | None = None  # the exception text, for logs


@dataclass(frozen=True)
class Capture:
    """Teacher outputs to keep on chosen frames (``Frame.outputs``).

    names: "atom_energy" and/or feature names of the teacher. frames(system index, step, last) -> whether to keep
    that frame's outputs (``last``: the frame ends a run that did not fail); None: every frame. The batched relaxer
    takes them from the forward pass that labelled the frame; the ASE relaxer labels the chosen frames once more.
    """

    names: tuple[str, ...]
    frames: Callable[[int, int, bool], bool] | None = None


def optimizer_class(name: str) -> type:
    import ase.optimize

    cls = getattr(ase.optimize, name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"optimizer '{name}' is not an ase.optimize class (e.g. BFGS, LBFGS, FIRE)")
    return cls


def relax(atoms: Atoms, calculator: Calculator, config: RelaxConfig) -> Trajectory:
    """Relax a copy of ``atoms`` (FixAtoms respected) and return every frame the optimizer visited.

    A calculator that raises, or returns non-finite labels, ends the run with ``failure`` set; the frames up to
    that point are returned with it.
    """
    atoms = atoms.copy()
    atoms.calc = calculator
    optimizer = optimizer_class(config.optimizer or DEFAULT_ASE_OPTIMIZER)(atoms, logfile=None)
    trajectory = Trajectory()
    try:
        # irun yields once per visited geometry, with the forces for that geometry already computed.
        for step, converged in enumerate(optimizer.irun(fmax=config.fmax, steps=config.steps)):
            energy = float(atoms.get_potential_energy())
            forces = np.array(atoms.get_forces(apply_constraint=False), dtype=np.float64)
            if not (np.isfinite(energy) and np.isfinite(forces).all()):
                trajectory.failure = "nonfinite_labels"
                break
            trajectory.frames.append(Frame(atoms.get_positions(), energy, forces, step))
            trajectory.converged = bool(converged)
    except Exception as exc:  # any calculator failure is data about this system, never fatal to the run
        trajectory.failure = "calculator_error"
        trajectory.error = f"{type(exc).__name__}: {exc}"
    return trajectory


def relax_each(
    systems: Sequence[Atoms],
    teacher: Teacher,
    config: RelaxConfig,
    batching: BatchConfig | None = None,
    *,
    capture: Capture | None = None,
) -> Iterator[tuple[int, Trajectory]]:
    """Relax ``systems`` one at a time with ``config.optimizer`` (default BFGS) on the teacher's ASE calculator;
    yields (index, trajectory) in index order (see ``relax``). ``batching`` does not apply (one system at a time)."""
    calculator = teacher.calculator()
    for index, atoms in enumerate(systems):
        trajectory = relax(atoms, calculator, config)
        if capture is not None:
            _label_chosen_frames(index, atoms, trajectory, teacher, capture)
        yield index, trajectory


def _label_chosen_frames(index: int, atoms: Atoms, trajectory: Trajectory, teacher: Teacher, capture: Capture) -> None:
    last = len(trajectory.frames) - 1 if trajectory.failure is None else -1
    for k, frame in enumerate(trajectory.frames):
        if capture.frames is None or capture.frames(index, frame.step, k == last):
            moved = atoms.copy()
            moved.positions = frame.positions
            labels = teacher.label(moved, ["energy", "forces", *capture.names])
            found = {"atom_energy": labels.atom_energy, **labels.features}
            frame.outputs = {name: found[name] for name in capture.names}
