"""The base OCP loss L0 and the KD losses (shared spec, algorithms.md "KD losses"; e2e between GemNet-OC models).

Every loss is a linear, weighted mean of per-row losses (``augkd.reductions``: a row is a system for energies, an
atom for forces, per-atom energies and features), so all-one weights give the plain mean and the mixer's origin
weights (batch mean 1) scale rows linearly. A KD loss is called as ``loss(student_output, teacher_targets, info,
heads, sample_weight=..., atom_weight=...)`` with the teacher's side as a ``TeacherTargets``
(``augkd.kd.targets``), online or cached alike; which features each one reads is ``augkd.kd.features``.
``KDLoss`` (``augkd.kd.combine``) combines them, each with its λ.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from augkd.errors import ConfigError
from augkd.kd.features import HEAD_LOSSES, missing_teacher_message
from augkd.kd.targets import TeacherTargets
from augkd.models.interface import ModelOutput, match_edges
from augkd.reductions import LossBatch, atom_weight_of, energy_loss, force_loss, weighted_mean

#: the projection heads a feature loss reads, by loss name (``augkd.kd.heads.ProjectionHeads``)
Heads = Mapping[str, Callable[[torch.Tensor], torch.Tensor]]


# ----------------------------------------------------------------------------------------------------------------
# The base loss and the feature loss
# ----------------------------------------------------------------------------------------------------------------
def ocp_loss(
    energy_pred: torch.Tensor,
    forces_pred: torch.Tensor,
    energy_target: torch.Tensor,
    forces_target: torch.Tensor,
    info: LossBatch,
    *,
    alpha_energy: float = 1.0,
    alpha_force: float = 100.0,
    energy_scale: float | None = None,
    force_scale: float | None = None,
    sample_weight: torch.Tensor | None = None,
    atom_weight: torch.Tensor | None = None,
    system_mask: torch.Tensor | None = None,
    atom_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L0 = α_E·MAE(E) + α_F·L2MAE(F over free atoms). Returns (total, {"energy": L_E, "forces": L_F}) unscaled.

    ``sample_weight`` (B,) weights each system's energy loss and each of its atoms' force losses; ``atom_weight``
    (N,) weights atoms' force losses. ``system_mask`` (B,) / ``atom_mask`` (N,) bool keep only the systems / atoms
    that have targets (cached teacher outputs). Also the vanilla(1) KD loss with the teacher's outputs as targets.
    """
    le = energy_loss(
        energy_pred, energy_target, energy_scale=energy_scale, sample_weight=sample_weight, system_mask=system_mask
    )
    lf = force_loss(
        forces_pred, forces_target, info, force_scale=force_scale, sample_weight=sample_weight,
        atom_weight=atom_weight, atom_mask=atom_mask,
    )
    total = alpha_energy * le + alpha_force * lf
    return total, {"energy": float(le.detach()), "forces": float(lf.detach())}


def feature_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    kind: str = "mse",
    weight: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """MSE (or MAE) between (N, ...) features: mean over all non-row axes, then the weighted mean over rows."""
    if pred.shape != target.shape:
        raise ConfigError(f"feature-dimension mismatch: student {tuple(pred.shape)} vs teacher {tuple(target.shape)}")
    diff = pred - target.to(pred.dtype)
    err = diff.square() if kind == "mse" else diff.abs()
    per_row = err.reshape(err.shape[0], -1).mean(dim=1)
    return weighted_mean(per_row, weight, mask)


# ----------------------------------------------------------------------------------------------------------------
# The five KD losses
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Vanilla1Loss:
    """vanilla(1): α_E·MAE(E_s, E_t) + α_F·L2MAE(F_s, F_t) over free atoms (α from config, default training α)."""

    alpha_energy: float = 1.0
    alpha_force: float = 100.0
    energy_scale: float | None = None
    force_scale: float | None = None
    name: str = "vanilla1"

    def __call__(
        self, student: ModelOutput, teacher: TeacherTargets, info: LossBatch, heads: Heads | None = None,
        sample_weight: torch.Tensor | None = None, atom_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        total, _ = ocp_loss(
            student.energy, student.forces, teacher.energy, teacher.forces, info,
            alpha_energy=self.alpha_energy, alpha_force=self.alpha_force, energy_scale=self.energy_scale,
            force_scale=self.force_scale, sample_weight=sample_weight, atom_weight=atom_weight,
            system_mask=teacher.systems_with_targets(info), atom_mask=teacher.mask,
        )
        return total


@dataclass
class Vanilla2Loss:
    """vanilla(2): mean over all atoms (fixed included) of |e_i,s − e_i,t|, the per-atom energy MAE."""

    energy_scale: float | None = None
    name: str = "vanilla2"

    def __call__(
        self, student: ModelOutput, teacher: TeacherTargets, info: LossBatch, heads: Heads | None = None,
        sample_weight: torch.Tensor | None = None, atom_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if teacher.atom_energy is None:
            raise ConfigError(missing_teacher_message("vanilla2", "teacher", teacher.available()))
        err = (student.atom_energy - teacher.atom_energy.to(student.atom_energy.dtype)).abs()
        if self.energy_scale is not None:
            err = err / self.energy_scale
        return weighted_mean(err, atom_weight_of(info, sample_weight, atom_weight), teacher.mask)


@dataclass
class _HeadFeatureLoss:
    """MSE(head(student feature), teacher feature), mean over atoms × channels (× 3 for vectors)."""

    kind: str = "mse"
    name: str = ""

    def __call__(
        self, student: ModelOutput, teacher: TeacherTargets, info: LossBatch, heads: Heads | None = None,
        sample_weight: torch.Tensor | None = None, atom_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        feature = HEAD_LOSSES[self.name]
        if feature not in student.features:
            raise ConfigError(f"{self.name} needs the student's {feature!r} features; the student has none")
        if heads is None or self.name not in heads:
            raise ConfigError(f"{self.name} needs its projection head (build ProjectionHeads with the student)")
        pred = heads[self.name](student.features[feature])
        target = teacher.target_for(self.name)
        return feature_loss(
            pred, target, kind=self.kind, weight=atom_weight_of(info, sample_weight, atom_weight), mask=teacher.mask
        )


@dataclass
class Node2NodeLoss(_HeadFeatureLoss):
    """n2n: MSE(M_s(H_node,s), H_node,t)."""

    name: str = "n2n"


@dataclass
class Edge2NodeLoss(_HeadFeatureLoss):
    """e2n: MSE(M'_s(H_node,s), Σ_{edges into i} H_edge,t) with its own head."""

    name: str = "e2n"


@dataclass
class Edge2EdgeLoss(_HeadFeatureLoss):
    """e2e: MSE(M_s(H_edge,s), H_edge,t) over the edges both models share (same atoms and cell offset), mean over
    edges × channels; an edge's weight and mask are those of its centre atom. For GemNet-OC → GemNet-OC-small,
    whose graphs coincide when cutoffs and neighbour limits agree."""

    name: str = "e2e"

    def __call__(
        self, student: ModelOutput, teacher: TeacherTargets, info: LossBatch, heads: Heads | None = None,
        sample_weight: torch.Tensor | None = None, atom_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if "edge" not in student.features or student.graph is None:
            raise ConfigError("e2e needs the student's per-edge 'edge' features and its graph; the student has none")
        if heads is None or self.name not in heads:
            raise ConfigError("e2e needs its projection head (build ProjectionHeads with the student)")
        if "edge" not in teacher.features or teacher.edge_index is None or teacher.edge_cell_offsets is None:
            raise ConfigError(missing_teacher_message("e2e", "the teacher", teacher.available()))
        graph = student.graph
        rows, teacher_rows = match_edges(
            graph.edge_index, graph.cell_offsets, teacher.edge_index, teacher.edge_cell_offsets, info.batch.shape[0]
        )
        pred = heads[self.name](student.features["edge"][rows])
        target = teacher.features["edge"][teacher_rows]
        centre = graph.edge_index[1, rows]
        weight = atom_weight_of(info, sample_weight, atom_weight)
        return feature_loss(
            pred, target, kind=self.kind, weight=None if weight is None else weight[centre],
            mask=None if teacher.mask is None else teacher.mask[centre],
        )


@dataclass
class Vector2VectorLoss(_HeadFeatureLoss):
    """v2v: MSE over N×3×C of W(H_vec,s) (channel-wise Linear, no bias) vs the teacher vector (or edge_vector)."""

    name: str = "v2v"
