"""Weighted reductions over the rows of a batch: OCP's energy MAE L_E and force L2MAE L_F, and the weighted mean
they share (shared spec, algorithms.md "Notation").

A row is a system for energies and an atom for forces, per-atom energies and features:

    L = Σ_r w_r · l_r / n          over the n rows r that are kept (free atoms for forces; rows with targets)

with w_r = sample_weight[system of r] · atom_weight[r] (both default to 1), so all-one weights give the plain mean
and scaling one row's weight changes its contribution linearly. Weights never scale predictions or targets. A
reduction over zero kept rows is a zero that still has a ``grad_fn``.

Neutral ground: the KD losses (``augkd.kd``), the trainer's base loss and the adversarial jitter's attack loss
(``augkd.generators.jitter``) all reduce through here, so a generator never imports a training concept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossBatch:
    """What a loss needs to know about the batch besides predictions and targets."""

    batch: torch.Tensor  # (N,) long, index of each atom's system in [0, num_systems)
    num_systems: int  # B
    free: torch.Tensor | None = None  # (N,) bool, True for atoms that may move (not FixAtoms); None = all free

    @classmethod
    def from_data(cls, data) -> LossBatch:
        """From a fairchem ``AtomicData`` batch (``batch``, ``natoms``, ``fixed``)."""
        fixed = getattr(data, "fixed", None)
        return cls(
            batch=data.batch.long(),
            num_systems=int(data.natoms.numel()),
            free=None if fixed is None else (fixed == 0),
        )


def weighted_mean(
    per_row: torch.Tensor, weight: torch.Tensor | None = None, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Σ_r w_r·l_r / n over the rows kept by ``mask`` (n = their number); zero rows → 0 with a ``grad_fn``."""
    if weight is not None:
        per_row = per_row * weight.to(per_row.dtype)
    if mask is not None:
        per_row = per_row[mask.bool()]
    if per_row.numel() == 0:
        return per_row.sum()
    return per_row.sum() / per_row.numel()


def atom_weight_of(
    info: LossBatch, sample_weight: torch.Tensor | None, atom_weight: torch.Tensor | None
) -> torch.Tensor | None:
    """Per-atom linear weight (N,): the system's weight times the atom's own weight (None when both are None)."""
    weight = None
    if sample_weight is not None:
        weight = sample_weight[info.batch]
    if atom_weight is not None:
        weight = atom_weight if weight is None else weight * atom_weight
    return weight


def _and(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a.bool() & b.bool()


def energy_loss(
    energy_pred: torch.Tensor,
    energy_target: torch.Tensor,
    *,
    energy_scale: float | None = None,
    sample_weight: torch.Tensor | None = None,
    system_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """OCP L_E: weighted MAE over systems of |Ê − E| (divided by ``energy_scale`` to compare normalised energies)."""
    err = (energy_pred - energy_target.to(energy_pred.dtype)).abs()
    if energy_scale is not None:
        err = err / energy_scale
    return weighted_mean(err, sample_weight, system_mask)


def force_loss(
    forces_pred: torch.Tensor,
    forces_target: torch.Tensor,
    info: LossBatch,
    *,
    force_scale: float | None = None,
    sample_weight: torch.Tensor | None = None,
    atom_weight: torch.Tensor | None = None,
    atom_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """OCP L_F (L2MAE): weighted mean over free atoms (and ``atom_mask``) of the norm of the force error."""
    err = torch.linalg.vector_norm(forces_pred - forces_target.to(forces_pred.dtype), dim=-1)
    if force_scale is not None:
        err = err / force_scale
    return weighted_mean(err, atom_weight_of(info, sample_weight, atom_weight), _and(info.free, atom_mask))
