"""The batched state a batched relaxation moves: many systems in one set of tensors.

Atoms of all systems are concatenated, contiguous per system. Every field is either per atom (first axis N) or
per system (first axis B), marked in its metadata, so that ``select`` (systems leaving a batch) and ``concat``
(systems joining it) treat every field alike, the optimizer's memory (``BatchState.optimizer``, e.g.
``augkd.generators.fire.FireState``) included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from ase import Atoms

from augkd.records import fixed_mask


def per_atom(optional: bool = False):
    """A field with one row per atom."""
    return field(default=None, metadata={"per": "atom"}) if optional else field(metadata={"per": "atom"})


def per_system(optional: bool = False):
    """A field with one row per system."""
    return field(default=None, metadata={"per": "system"}) if optional else field(metadata={"per": "system"})


def nested():
    """A field holding another such dataclass (or None), selected and joined by the same rule."""
    return field(default=None, metadata={"per": "nested"})


@dataclass
class BatchState:
    """Systems in flight: geometry, which atoms may move, and per-system step counters.

    positions (N, 3) Å float64; free (N,) bool, False for atoms held by FixAtoms; cell (B, 3, 3) Å; natoms (B,);
    step (B,): steps taken so far; max_steps (B,): the system's step limit; optimizer: the optimizer's per-system
    memory (None until the optimizer's init).
    """

    positions: torch.Tensor = per_atom()
    free: torch.Tensor = per_atom()
    cell: torch.Tensor = per_system()
    natoms: torch.Tensor = per_system()
    step: torch.Tensor = per_system()
    max_steps: torch.Tensor = per_system()
    optimizer: Any = nested()

    @classmethod
    def from_atoms(cls, systems: Sequence[Atoms], max_steps: Sequence[int], device: torch.device) -> BatchState:
        """The state of ``systems`` before any step (positions, FixAtoms and cells taken from the ``Atoms``)."""
        return cls(
            positions=torch.tensor(np.concatenate([atoms.positions for atoms in systems]), dtype=torch.float64,
                                   device=device),
            free=torch.tensor(np.concatenate([~fixed_mask(atoms) for atoms in systems]), device=device),
            cell=torch.tensor(np.stack([np.asarray(atoms.cell) for atoms in systems]), dtype=torch.float64,
                              device=device),
            natoms=torch.tensor([len(atoms) for atoms in systems], dtype=torch.long, device=device),
            step=torch.zeros(len(systems), dtype=torch.long, device=device),
            max_steps=torch.tensor(list(max_steps), dtype=torch.long, device=device),
        )

    def __len__(self) -> int:
        return int(self.natoms.shape[0])

    @property
    def system_index(self) -> torch.Tensor:
        """(N,) the system of each atom."""
        return torch.repeat_interleave(torch.arange(len(self), device=self.natoms.device), self.natoms)

    def select(self, keep: torch.Tensor) -> BatchState:
        """The systems where ``keep`` (B,) is True, in order."""
        return select_systems(self, keep, self.natoms)

    @staticmethod
    def concat(states: Sequence[BatchState]) -> BatchState:
        """The systems of ``states`` in one state, in the order given."""
        return concat_systems(list(states))


def select_systems(state, keep: torch.Tensor, natoms: torch.Tensor):
    """``state`` (a dataclass of per-atom, per-system and nested fields) restricted to the systems where ``keep``."""
    atom_keep = torch.repeat_interleave(keep, natoms)
    values = {}
    for item in fields(state):
        value = getattr(state, item.name)
        if value is not None:
            per = item.metadata["per"]
            value = select_systems(value, keep, natoms) if per == "nested" else value[atom_keep if per == "atom" else keep]
        values[item.name] = value
    return replace(state, **values)


def concat_systems(states: list):
    """Several such states joined into one, systems in the order given."""
    values = {}
    for item in fields(states[0]):
        parts = [getattr(s, item.name) for s in states]
        if parts[0] is None:
            values[item.name] = None
        elif item.metadata["per"] == "nested":
            values[item.name] = concat_systems(parts)
        else:
            values[item.name] = torch.cat(parts)
    return replace(states[0], **values)
