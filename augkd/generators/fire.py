"""Batched FIRE: ASE's ``ase.optimize.FIRE`` for many systems at once, each with its own time step and mixing.

One optimizer state covers every system of a batch (atoms concatenated, contiguous per system). ``fire_init`` makes
the state of fresh systems, ``fire_step`` moves every system by one FIRE step, ``select_systems`` and
``concat_systems`` let systems leave and join a running batch. Each system's arithmetic is ASE's (same defaults,
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

from dataclasses import dataclass, field, fields, replace

import torch

from augkd.errors import ConfigError


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


def _per_atom(optional: bool = False):
    return field(default=None, metadata={"per": "atom"}) if optional else field(metadata={"per": "atom"})


def _per_system(optional: bool = False):
    return field(default=None, metadata={"per": "system"}) if optional else field(metadata={"per": "system"})


@dataclass
class FireState:
    """FIRE's per-system memory for a batch; per-atom tensors are (N, 3), per-system ones (B,)."""

    velocity: torch.Tensor = _per_atom()
    dt: torch.Tensor = _per_system()
    a: torch.Tensor = _per_system()
    n_positive: torch.Tensor = _per_system()  # steps in a row with P > 0 (ASE's Nsteps)
    started: torch.Tensor = _per_system()  # False until the system's first step (ASE's ``vel is None``)
    energy_last: torch.Tensor | None = _per_system(optional=True)  # downhill check only, eV
    positions_last: torch.Tensor | None = _per_atom(optional=True)  # downhill check only, Å


def segment_sum(values: torch.Tensor, natoms: torch.Tensor) -> torch.Tensor:
    """Per-system sums of per-atom ``values`` (atoms contiguous per system); each sum sees only its own system."""
    return torch.segment_reduce(values, "sum", lengths=natoms)


def segment_max(values: torch.Tensor, natoms: torch.Tensor) -> torch.Tensor:
    return torch.segment_reduce(values, "max", lengths=natoms)


def fire_init(positions: torch.Tensor, natoms: torch.Tensor, params: FireParams) -> FireState:
    """The state of systems that have not moved yet (``positions`` (N, 3), ``natoms`` (B,))."""
    systems = natoms.shape[0]
    options = {"dtype": positions.dtype, "device": positions.device}
    return FireState(
        velocity=torch.zeros_like(positions),
        dt=torch.full((systems,), params.dt, **options),
        a=torch.full((systems,), params.a, **options),
        n_positive=torch.zeros(systems, dtype=torch.long, device=positions.device),
        started=torch.zeros(systems, dtype=torch.bool, device=positions.device),
        energy_last=torch.zeros(systems, **options) if params.downhill_check else None,
        positions_last=positions.clone() if params.downhill_check else None,
    )


def fire_step(
    positions: torch.Tensor,
    forces: torch.Tensor,
    energy: torch.Tensor,
    natoms: torch.Tensor,
    state: FireState,
    params: FireParams,
) -> tuple[torch.Tensor, FireState]:
    """One FIRE step of every system: the new positions and state.

    ``positions``/``forces`` (N, 3) in Å and eV/Å, forces zero on fixed atoms; ``energy`` (B,) eV (read only by the
    downhill check); ``natoms`` (B,) atoms per system, the atoms of a system being contiguous.
    """
    system = torch.repeat_interleave(torch.arange(natoms.shape[0], device=natoms.device), natoms)
    started = state.started
    energy_last, positions_last = state.energy_last, state.positions_last
    uphill = torch.zeros_like(started)
    if params.downhill_check:
        uphill = started & (energy > state.energy_last)
        positions = torch.where(uphill[system, None], state.positions_last, positions)
        # back at the previous point, its energy is the one remembered; otherwise the energy just computed
        energy_last = torch.where(uphill, state.energy_last, energy)
        positions_last = positions

    velocity = state.velocity
    power = segment_sum((forces * velocity).sum(dim=1), natoms)
    force_norm = torch.sqrt(segment_sum((forces * forces).sum(dim=1), natoms))
    speed = torch.sqrt(segment_sum((velocity * velocity).sum(dim=1), natoms))
    downhill = started & (power > 0.0) & ~uphill
    restart = started & ~downhill

    a = state.a
    # ASE's order of operations: (1 - a)·v + ((a·F) / |F|)·|v|
    mixed = (1.0 - a)[system, None] * velocity + a[system, None] * forces / force_norm[system, None] * speed[system, None]
    velocity = torch.where(downhill[system, None], mixed, torch.where(restart[system, None], 0.0, velocity))
    accelerate = downhill & (state.n_positive > params.n_min)
    dt = torch.where(accelerate, torch.clamp(state.dt * params.finc, max=params.dtmax), state.dt)
    a = torch.where(accelerate, a * params.fa, a)
    n_positive = torch.where(downhill, state.n_positive + 1, state.n_positive)
    a = torch.where(restart, torch.full_like(a, params.astart), a)
    dt = torch.where(restart, dt * params.fdec, dt)
    n_positive = torch.where(restart, torch.zeros_like(n_positive), n_positive)

    velocity = velocity + dt[system, None] * forces
    step = dt[system, None] * velocity
    step_norm = torch.sqrt(segment_sum((step * step).sum(dim=1), natoms))
    too_long = step_norm > params.maxstep
    step = torch.where(too_long[system, None], params.maxstep * step / step_norm[system, None], step)
    new_state = FireState(
        velocity=velocity,
        dt=dt,
        a=a,
        n_positive=n_positive,
        started=torch.ones_like(started),
        energy_last=energy_last,
        positions_last=positions_last,
    )
    return positions + step, new_state


def select_systems(state, keep: torch.Tensor, natoms: torch.Tensor):
    """``state`` (a dataclass of per-atom and per-system tensors) restricted to the systems where ``keep`` (B,)."""
    atom_keep = torch.repeat_interleave(keep, natoms)
    values = {}
    for item in fields(state):
        value = getattr(state, item.name)
        if value is not None:
            value = value[atom_keep] if item.metadata["per"] == "atom" else value[keep]
        values[item.name] = value
    return replace(state, **values)


def concat_systems(states: list):
    """Several such states joined into one, systems in the order given."""
    first = states[0]
    values = {}
    for item in fields(first):
        parts = [getattr(s, item.name) for s in states]
        values[item.name] = None if parts[0] is None else torch.cat(parts)
    return replace(first, **values)
