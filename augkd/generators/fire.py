"""Batched FIRE: ASE's ``ase.optimize.FIRE`` for many systems at once, each with its own time step and mixing.

FIRE steps one ``BatchState`` (``augkd.generators.state``: every system of a batch, atoms concatenated, contiguous
per system). ``fire_init`` gives fresh systems their FIRE memory (``FireState``, the state's ``optimizer``),
``fire_step`` moves every system by one FIRE step; ``BatchState.select`` and ``BatchState.concat`` let systems leave
and join a running batch, their FIRE memory with them. Each system's arithmetic is ASE's (same defaults,
same order of operations, per-system reductions), so a system follows the same path alone or among others:
- the power P = F·v, |F|² and |v|² are sums over the system's own degrees of freedom (fixed atoms have F = v = 0);
- P > 0: v ← (1 − a)·v + a·F/|F|·|v|, and after more than ``n_min`` such steps in a row dt grows (×finc, ≤ dtmax)
  and a shrinks (×fa); P ≤ 0: v ← 0, a ← astart, dt ← dt·fdec, and the count restarts;
- then v ← v + dt·F, Δr = dt·v, scaled down so that the *whole system's* |Δr| is at most ``maxstep`` (ASE caps the
  norm over all 3N coordinates, not per atom);
- the first step of a system only does v ← dt·F (ASE starts with no velocity and a = ``a``, not ``astart``);
- ``downhill_check``: a step whose energy rose returns the system to its previous positions and restarts it (P
  treated as ≤ 0), keeping the forces of the rejected point for that step, as ASE does.
Forces given to ``fire_step`` must already be zero on fixed atoms (ASE's FixAtoms does the same).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from augkd.errors import ConfigError
from augkd.generators.state import BatchState, per_atom, per_system


@dataclass(frozen=True)
class FireParams:
    """ASE's FIRE parameters and defaults (times in ASE's unit, distances in Å)."""

    dt: float = 0.1  # initial time step
    maxstep: float = 0.2  # Å, largest norm of one system's step over all its coordinates
    dtmax: float = 1.0
    n_min: int = 5  # steps with P > 0 before dt may grow (ASE's Nmin)
    finc: float = 1.1
    fdec: float = 0.5
    astart: float = 0.1  # mixing after a restart
    fa: float = 0.99
    a: float = 0.1  # mixing at the start
    downhill_check: bool = False

    def __post_init__(self) -> None:
        for name in ("dt", "maxstep", "dtmax", "finc", "fdec", "fa"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"FIRE {name}={getattr(self, name)} must be > 0")


@dataclass
class FireState:
    """FIRE's per-system memory for a batch; per-atom tensors are (N, 3), per-system ones (B,)."""

    velocity: torch.Tensor = per_atom()
    dt: torch.Tensor = per_system()
    a: torch.Tensor = per_system()
    n_positive: torch.Tensor = per_system()  # steps in a row with P > 0 (ASE's Nsteps)
    started: torch.Tensor = per_system()  # False until the system's first step (ASE's ``vel is None``)
    energy_last: torch.Tensor | None = per_system(optional=True)  # downhill check only, eV
    positions_last: torch.Tensor | None = per_atom(optional=True)  # downhill check only, Å


def segment_sum(values: torch.Tensor, natoms: torch.Tensor) -> torch.Tensor:
    """Per-system sums of per-atom ``values`` (atoms contiguous per system); each sum sees only its own system."""
    return torch.segment_reduce(values, "sum", lengths=natoms)


def segment_max(values: torch.Tensor, natoms: torch.Tensor) -> torch.Tensor:
    return torch.segment_reduce(values, "max", lengths=natoms)


def fire_init(state: BatchState, params: FireParams) -> BatchState:
    """``state`` with FIRE's memory for systems that have not moved yet."""
    positions, systems = state.positions, len(state)
    options = {"dtype": positions.dtype, "device": positions.device}
    memory = FireState(
        velocity=torch.zeros_like(positions),
        dt=torch.full((systems,), params.dt, **options),
        a=torch.full((systems,), params.a, **options),
        n_positive=torch.zeros(systems, dtype=torch.long, device=positions.device),
        started=torch.zeros(systems, dtype=torch.bool, device=positions.device),
        energy_last=torch.zeros(systems, **options) if params.downhill_check else None,
        positions_last=positions.clone() if params.downhill_check else None,
    )
    return replace(state, optimizer=memory)


def fire_step(state: BatchState, forces: torch.Tensor, energy: torch.Tensor, params: FireParams) -> BatchState:
    """``state`` after one FIRE step of every system: new positions and FIRE memory, each step count + 1.

    ``forces`` (N, 3) eV/Å, zero on fixed atoms; ``energy`` (B,) eV (read only by the downhill check).
    """
    positions, natoms = state.positions, state.natoms
    system = state.system_index
    memory = state.optimizer
    started = memory.started
    energy_last, positions_last = memory.energy_last, memory.positions_last
    uphill = torch.zeros_like(started)
    if params.downhill_check:
        uphill = started & (energy > memory.energy_last)
        positions = torch.where(uphill[system, None], memory.positions_last, positions)
        # back at the previous point, its energy is the one remembered; otherwise the energy just computed
        energy_last = torch.where(uphill, memory.energy_last, energy)
        positions_last = positions

    velocity = memory.velocity
    power = segment_sum((forces * velocity).sum(dim=1), natoms)
    force_norm = torch.sqrt(segment_sum((forces * forces).sum(dim=1), natoms))
    speed = torch.sqrt(segment_sum((velocity * velocity).sum(dim=1), natoms))
    downhill = started & (power > 0.0) & ~uphill
    restart = started & ~downhill

    a = memory.a
    # ASE's order of operations: (1 - a)·v + ((a·F) / |F|)·|v|
    mixed = (1.0 - a)[system, None] * velocity + a[system, None] * forces / force_norm[system, None] * speed[system, None]
    velocity = torch.where(downhill[system, None], mixed, torch.where(restart[system, None], 0.0, velocity))
    accelerate = downhill & (memory.n_positive > params.n_min)
    dt = torch.where(accelerate, torch.clamp(memory.dt * params.finc, max=params.dtmax), memory.dt)
    a = torch.where(accelerate, a * params.fa, a)
    n_positive = torch.where(downhill, memory.n_positive + 1, memory.n_positive)
    a = torch.where(restart, torch.full_like(a, params.astart), a)
    dt = torch.where(restart, dt * params.fdec, dt)
    n_positive = torch.where(restart, torch.zeros_like(n_positive), n_positive)

    velocity = velocity + dt[system, None] * forces
    step = dt[system, None] * velocity
    step_norm = torch.sqrt(segment_sum((step * step).sum(dim=1), natoms))
    too_long = step_norm > params.maxstep
    step = torch.where(too_long[system, None], params.maxstep * step / step_norm[system, None], step)
    memory = FireState(
        velocity=velocity,
        dt=dt,
        a=a,
        n_positive=n_positive,
        started=torch.ones_like(started),
        energy_last=energy_last,
        positions_last=positions_last,
    )
    return replace(state, positions=positions + step, step=state.step + 1, optimizer=memory)
