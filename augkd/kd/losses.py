"""The base OCP loss L0 and the KD losses (shared spec, algorithms.md "KD losses"; e2e between GemNet-OC models).

One code path serves an online teacher and cached teacher outputs: both are turned into a ``TeacherTargets``
(``TeacherTargets.from_output(teacher_model_output)`` online; the constructor with tensors read from the dataset
when cached). Every loss is a linear, weighted mean of per-row losses (a row = a system for energies, an atom for
forces, per-atom energies and features):

    L = Σ_r w_r · l_r / n          over the n rows r that are kept (free atoms for forces; rows with cached
                                   teacher features for feature losses)

with w_r = sample_weight[system of r] · atom_weight[r] (both default to 1), so all-one weights give the plain mean
and scaling one row's weight changes its contribution linearly (the mixer's origin weights have batch mean 1).
Weights never scale predictions or targets. A loss over zero kept rows is a zero that still has a ``grad_fn``.

``KDLoss`` combines the configured terms, each with its λ (a number, or ``"auto"``: see ``calibrate_lambdas``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from augkd.errors import ConfigError
from augkd.models.interface import ModelOutput, match_edges
from augkd.vocabulary import KD_LOSS_NAMES

if TYPE_CHECKING:  # pragma: no cover
    from augkd.kd.heads import ProjectionHeads

#: The loss that owns each projection head (and the student feature it maps).
HEAD_LOSSES = {"n2n": "node", "e2n": "node", "v2v": "vector", "e2e": "edge"}


# ----------------------------------------------------------------------------------------------------------------
# Batch information and teacher targets
# ----------------------------------------------------------------------------------------------------------------
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


def edge_to_node(edge_features: torch.Tensor, edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """H_e2n,i = Σ over edges whose target (centre, ``edge_index[1]``) is i of H_edge: (E, C) → (N, C)."""
    out = edge_features.new_zeros((num_nodes, *edge_features.shape[1:]))
    return out.index_add(0, edge_index[1].long(), edge_features)


def edge_to_vector(
    edge_features: torch.Tensor, edge_index: torch.Tensor, unit_vec: torch.Tensor, num_nodes: int
) -> torch.Tensor:
    """H_vec,i^(k) = Σ_{edges (j→i)} u_ij · H_edge^(k): (E, C) with (E, 3) unit vectors → (N, 3, C).

    ``u_ij`` follows ``augkd.models.interface``: pos[j] - pos[i] (+ shift), normalised, i = ``edge_index[1]``.
    """
    contrib = unit_vec.to(edge_features.dtype).unsqueeze(-1) * edge_features.unsqueeze(1)  # (E, 3, C)
    out = edge_features.new_zeros((num_nodes, 3, edge_features.shape[-1]))
    return out.index_add(0, edge_index[1].long(), contrib)


@dataclass
class TeacherTargets:
    """The teacher's side of every KD loss, from an online teacher or from cached dataset fields.

    Features use the names and layouts of ``augkd.models.interface.FEATURE_KINDS``. ``mask`` marks the atoms whose
    cached targets exist (rows of a batch mixing labelled and unlabelled frames): feature losses, vanilla(2) and
    vanilla(1)'s forces use only those atoms, vanilla(1)'s energy only ``system_mask`` (default: the systems with
    at least one such atom).
    """

    energy: torch.Tensor | None  # (B,) eV
    forces: torch.Tensor | None  # (N, 3) eV/Å
    atom_energy: torch.Tensor | None = None  # (N,) eV
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    edge_index: torch.Tensor | None = None  # (2, E), only with 'edge' features
    edge_unit_vec: torch.Tensor | None = None  # (E, 3), only with 'edge' features
    edge_cell_offsets: torch.Tensor | None = None  # (E, 3) integer cell shifts of the edges (online teachers)
    mask: torch.Tensor | None = None  # (N,) bool; None = every atom has its per-atom targets
    system_mask: torch.Tensor | None = None  # (B,) bool, systems with cached energy/forces; None = from ``mask``

    @classmethod
    def from_output(cls, output: ModelOutput, detach: bool = True) -> TeacherTargets:
        """From a teacher's ``ModelOutput``; derives ``edge2node``/``edge_vector`` from ``edge`` features + graph.

        ``detach=False`` keeps the graph (the adversarial attack differentiates through the teacher).
        """

        def d(t):
            return None if t is None else (t.detach() if detach else t)

        features = {k: d(v) for k, v in output.features.items()}
        edge_index = unit = offsets = None
        if "edge" in features and output.graph is not None:
            edge_index = output.graph.edge_index
            unit = d(output.graph.unit_vec)
            offsets = output.graph.cell_offsets
            num_nodes = output.forces.shape[0]
            if "edge2node" not in features:
                features["edge2node"] = edge_to_node(features["edge"], edge_index, num_nodes)
            if "edge_vector" not in features:
                features["edge_vector"] = edge_to_vector(features["edge"], edge_index, unit, num_nodes)
        return cls(
            energy=d(output.energy),
            forces=d(output.forces),
            atom_energy=d(output.atom_energy),
            features=features,
            edge_index=edge_index,
            edge_unit_vec=unit,
            edge_cell_offsets=offsets,
        )

    def systems_with_targets(self, info: LossBatch) -> torch.Tensor | None:
        """(B,) bool: ``system_mask``, else the systems with at least one atom in ``mask`` (None = all)."""
        if self.system_mask is not None or self.mask is None:
            return self.system_mask
        counts = torch.zeros(info.num_systems, device=self.mask.device)
        return counts.index_add(0, info.batch, self.mask.float()) > 0

    def target_for(self, loss_name: str) -> torch.Tensor:
        """The teacher tensor that loss ``loss_name`` (n2n, e2n or v2v) regresses onto."""
        name = resolve_teacher_feature(loss_name, self.available())
        if name is None:
            raise ConfigError(missing_teacher_message(loss_name, "teacher", self.available()))
        if name in self.features:
            return self.features[name]
        # Derive from raw edge features on the fly (cached 'edge' rows with their graph).
        if self.edge_index is None or (name == "edge_vector" and self.edge_unit_vec is None):
            need = "edge_index" if self.edge_index is None else "edge_unit_vec"
            raise ConfigError(f"{loss_name} needs {name!r} derived from teacher 'edge' features, but {need} is missing")
        edge = self.features["edge"]
        per_atom = [t for t in (self.forces, self.atom_energy, self.mask) if t is not None]
        num_nodes = per_atom[0].shape[0] if per_atom else int(self.edge_index[1].max()) + 1
        if name == "edge2node":
            return edge_to_node(edge, self.edge_index, num_nodes)
        return edge_to_vector(edge, self.edge_index, self.edge_unit_vec, num_nodes)

    def available(self) -> list[str]:
        names = set(self.features)
        if "edge" in names and self.edge_index is not None:
            names.add("edge2node")
            if self.edge_unit_vec is not None:
                names.add("edge_vector")
        if self.atom_energy is not None:
            names.add("atom_energy")
        return sorted(names)


#: Teacher feature names that satisfy each loss, in order of preference.
TEACHER_FEATURES = {
    "vanilla2": ("atom_energy",),
    "n2n": ("node",),
    "e2n": ("edge2node", "edge"),
    "v2v": ("vector", "edge_vector", "edge"),
    "e2e": ("edge",),
}


def resolve_teacher_feature(loss_name: str, available: Iterable[str]) -> str | None:
    """Which teacher feature loss ``loss_name`` uses given the ``available`` names (raw 'edge' → derived name)."""
    available = set(available)
    for name in TEACHER_FEATURES.get(loss_name, ()):
        if name in available:
            if name == "edge":
                return {"e2n": "edge2node", "v2v": "edge_vector"}.get(loss_name, "edge")
            return name
    return None


def missing_teacher_message(loss_name: str, teacher_name: str, available: Iterable[str]) -> str:
    wanted = TEACHER_FEATURES[loss_name]
    if loss_name == "e2n":
        need = "teacher 'edge' or 'edge2node' features"
    elif loss_name == "v2v":
        need = "teacher 'vector' features (or 'edge'/'edge_vector' features to derive them from)"
    elif loss_name == "e2e":
        need = "teacher per-edge 'edge' features from an online teacher (per-edge features are not cached)"
    elif loss_name == "vanilla2":
        need = "teacher per-atom energies ('atom_energy')"
    else:
        need = "teacher " + " or ".join(repr(w) for w in wanted) + " features"
    return f"{loss_name} needs {need}; {teacher_name} provides {sorted(available)}"


# ----------------------------------------------------------------------------------------------------------------
# Weighted reductions
# ----------------------------------------------------------------------------------------------------------------
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


def _atom_weight(info: LossBatch, sample_weight, atom_weight):
    """Per-atom linear weight: the system's weight times the atom's own weight (None when both are None)."""
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
    return weighted_mean(err, _atom_weight(info, sample_weight, atom_weight), _and(info.free, atom_mask))


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

    def __call__(self, student, teacher, info, heads=None, sample_weight=None, atom_weight=None):
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

    def __call__(self, student, teacher, info, heads=None, sample_weight=None, atom_weight=None):
        if teacher.atom_energy is None:
            raise ConfigError(missing_teacher_message("vanilla2", "teacher", teacher.available()))
        err = (student.atom_energy - teacher.atom_energy.to(student.atom_energy.dtype)).abs()
        if self.energy_scale is not None:
            err = err / self.energy_scale
        return weighted_mean(err, _atom_weight(info, sample_weight, atom_weight), teacher.mask)


@dataclass
class _HeadFeatureLoss:
    """MSE(head(student feature), teacher feature), mean over atoms × channels (× 3 for vectors)."""

    kind: str = "mse"
    name: str = ""

    def __call__(self, student, teacher, info, heads=None, sample_weight=None, atom_weight=None):
        feature = HEAD_LOSSES[self.name]
        if feature not in student.features:
            raise ConfigError(f"{self.name} needs the student's {feature!r} features; the student has none")
        if heads is None or self.name not in heads:
            raise ConfigError(f"{self.name} needs its projection head (build ProjectionHeads with the student)")
        pred = heads[self.name](student.features[feature])
        target = teacher.target_for(self.name)
        return feature_loss(
            pred, target, kind=self.kind, weight=_atom_weight(info, sample_weight, atom_weight), mask=teacher.mask
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

    def __call__(self, student, teacher, info, heads=None, sample_weight=None, atom_weight=None):
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
        weight = _atom_weight(info, sample_weight, atom_weight)
        return feature_loss(
            pred, target, kind=self.kind, weight=None if weight is None else weight[centre],
            mask=None if teacher.mask is None else teacher.mask[centre],
        )


@dataclass
class Vector2VectorLoss(_HeadFeatureLoss):
    """v2v: MSE over N×3×C of W(H_vec,s) (channel-wise Linear, no bias) vs the teacher vector (or edge_vector)."""

    name: str = "v2v"


# ----------------------------------------------------------------------------------------------------------------
# Combiner
# ----------------------------------------------------------------------------------------------------------------
_TERM_OPTIONS = {
    "vanilla1": {"alpha_energy", "alpha_force"},
    "vanilla2": set(),
    "n2n": {"loss"},
    "e2n": {"loss"},
    "v2v": {"loss"},
    "e2e": {"loss"},
}
_COMMON_OPTIONS = {"name", "lambda", "fraction"}


def calibrate_lambdas(
    kd_parts_at_start: Mapping[str, float], base_loss: float, target_fraction: float | Mapping[str, float]
) -> dict[str, float]:
    """λ_k = f_k · L0 / L_KD,k, so that λ_k·L_KD,k starts at the fraction f_k of the base loss L0.

    ``kd_parts_at_start``: the unscaled KD losses on the first batch(es) (average a few batches, and across
    ranks, for a steadier estimate); ``base_loss``: L0 on the same batches; ``target_fraction``: one fraction for
    every term, or one per term name. (The paper tuned λ by hand so that λ·L_KD started near L0's magnitude.)
    """
    lambdas = {}
    base_loss = _to_float(base_loss)
    for name, part in kd_parts_at_start.items():
        part = _to_float(part)
        fraction = target_fraction[name] if isinstance(target_fraction, Mapping) else target_fraction
        if not (math.isfinite(part) and part > 0):
            raise ConfigError(f"cannot choose λ for {name} automatically: its loss at the start is {part}")
        if not (math.isfinite(base_loss) and base_loss > 0):
            raise ConfigError(f"cannot choose λ automatically: the base loss at the start is {base_loss}")
        if fraction < 0:
            raise ConfigError(f"{name}: target fraction must be ≥ 0, got {fraction}")
        lambdas[name] = float(fraction) * float(base_loss) / float(part)
    return lambdas


def _to_float(value) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


class KDLoss:
    """Σ_k λ_k·L_KD,k from a config list, e.g. ``[{"name": "n2n", "lambda": 100}, {"name": "vanilla1",
    "lambda": 1}]``.

    Per term: ``name`` (vanilla1, vanilla2, n2n, e2n, v2v, e2e), ``lambda`` (a number ≥ 0 or ``"auto"``), ``fraction``
    (auto only; default ``auto_fraction``), ``loss`` ("mse"/"mae", feature losses), ``alpha_energy``/``alpha_force``
    (vanilla1; default the training α). ``energy_scale``/``force_scale``: the normalisation divisors shared with
    L0 so teacher and student outputs are compared in the same space.

    Use: ``kd.check(student_shapes, teacher_shapes)`` once; ``heads = ProjectionHeads(student_shapes,
    teacher_shapes, kd.names)`` on the student; per step ``total, parts = kd(student_out, targets, info, heads,
    sample_weight=..., atom_weight=...)``. With ``"auto"`` terms, call ``kd.calibrate(parts, base_loss)`` with the
    parts from ``kd.parts(...)`` on the first batch before the first ``kd(...)``.
    """

    def __init__(
        self,
        terms: Iterable[Mapping],
        *,
        alpha_energy: float = 1.0,
        alpha_force: float = 100.0,
        energy_scale: float | None = None,
        force_scale: float | None = None,
        auto_fraction: float = 1.0,
    ):
        self.losses: dict[str, object] = {}
        self.lambdas: dict[str, float | None] = {}  # None = "auto", not calibrated yet
        self.fractions: dict[str, float] = {}
        for term in terms:
            term = dict(term)
            name = term.get("name")
            if name not in KD_LOSS_NAMES:
                raise ConfigError(f"unknown KD loss {name!r}; known: {', '.join(KD_LOSS_NAMES)}")
            if name in self.losses:
                raise ConfigError(f"KD loss {name!r} is configured twice")
            unknown = set(term) - _COMMON_OPTIONS - _TERM_OPTIONS[name]
            if unknown:
                raise ConfigError(f"KD loss {name}: unknown option(s) {sorted(unknown)}")
            lam = term.get("lambda", 1.0)
            if lam == "auto":
                self.lambdas[name] = None
                self.fractions[name] = float(term.get("fraction", auto_fraction))
            else:
                try:
                    lam = float(lam)
                except (TypeError, ValueError):
                    raise ConfigError(f"KD loss {name}: lambda must be a number or 'auto', got {lam!r}") from None
                if not (math.isfinite(lam) and lam >= 0):
                    raise ConfigError(f"KD loss {name}: lambda must be ≥ 0, got {lam}")
                self.lambdas[name] = lam
            kind = term.get("loss", "mse")
            if kind not in ("mse", "mae"):
                raise ConfigError(f"KD loss {name}: loss must be 'mse' or 'mae', got {kind!r}")
            if name == "vanilla1":
                self.losses[name] = Vanilla1Loss(
                    alpha_energy=float(term.get("alpha_energy", alpha_energy)),
                    alpha_force=float(term.get("alpha_force", alpha_force)),
                    energy_scale=energy_scale, force_scale=force_scale,
                )
            elif name == "vanilla2":
                self.losses[name] = Vanilla2Loss(energy_scale=energy_scale)
            else:
                cls = {"n2n": Node2NodeLoss, "e2n": Edge2NodeLoss, "v2v": Vector2VectorLoss, "e2e": Edge2EdgeLoss}[name]
                self.losses[name] = cls(kind=kind)

    @property
    def names(self) -> list[str]:
        return list(self.losses)

    def __len__(self) -> int:
        return len(self.losses)

    def required_teacher_features(self) -> list[str]:
        """Teacher quantities to request or cache beyond energy/forces: e.g. ``["node", "edge2node"]``.

        (e2n is also satisfied by raw 'edge' features, v2v by 'edge'/'edge_vector'; ``check`` knows.)
        """
        return [TEACHER_FEATURES[name][0] for name in self.losses if name in TEACHER_FEATURES]

    def check(
        self,
        student_feature_shapes: Mapping[str, tuple],
        teacher_feature_shapes: Mapping[str, tuple],
        student_name: str = "the student",
        teacher_name: str = "the teacher",
    ) -> None:
        """Raise ``ConfigError`` naming the loss and the missing/mismatched feature.

        Shapes are per row (no leading atom/edge axis): node/edge/edge2node (C,), vector/edge_vector (3, C); list
        ``"atom_energy": ()`` among the teacher's when it provides per-atom energies.
        """
        for name in self.losses:
            if name in HEAD_LOSSES:
                feature = HEAD_LOSSES[name]
                if feature not in student_feature_shapes:
                    raise ConfigError(f"{name} needs the student's {feature!r} features; {student_name} has none")
                _check_rank(name, "student", feature, student_feature_shapes[feature])
            if name in TEACHER_FEATURES:
                resolved = resolve_teacher_feature(name, teacher_feature_shapes)
                if resolved is None:
                    raise ConfigError(missing_teacher_message(name, teacher_name, teacher_feature_shapes))
                if name in HEAD_LOSSES:
                    source = resolved if resolved in teacher_feature_shapes else "edge"
                    shape = tuple(teacher_feature_shapes[source])
                    if resolved == "edge_vector" and source == "edge":
                        shape = (3, *shape)
                    _check_rank(name, "teacher", resolved, shape)

    def teacher_channels(self, name: str, teacher_feature_shapes: Mapping[str, tuple]) -> int:
        """Channel count of the teacher target of head loss ``name``."""
        resolved = resolve_teacher_feature(name, teacher_feature_shapes)
        source = resolved if resolved in teacher_feature_shapes else "edge"
        return int(tuple(teacher_feature_shapes[source])[-1])

    def parts(
        self, student: ModelOutput, teacher: TeacherTargets, info: LossBatch, heads=None, *,
        sample_weight: torch.Tensor | None = None, atom_weight: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Unscaled KD losses by name (tensors with grad)."""
        return {
            name: loss(student, teacher, info, heads, sample_weight=sample_weight, atom_weight=atom_weight)
            for name, loss in self.losses.items()
        }

    def __call__(
        self, student: ModelOutput, teacher: TeacherTargets, info: LossBatch, heads: ProjectionHeads | None = None,
        *, sample_weight: torch.Tensor | None = None, atom_weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """(Σ λ_k·L_k, {name: L_k unscaled as float})."""
        uncalibrated = [n for n, lam in self.lambdas.items() if lam is None]
        if uncalibrated:
            raise ConfigError(f"KD λ for {uncalibrated} is 'auto' but calibrate() was not called")
        parts = self.parts(student, teacher, info, heads, sample_weight=sample_weight, atom_weight=atom_weight)
        if not parts:
            zero = student.energy.sum() * 0.0
            return zero, {}
        total = sum(self.lambdas[name] * value for name, value in parts.items())
        return total, {name: float(value.detach()) for name, value in parts.items()}

    @property
    def needs_calibration(self) -> bool:
        return any(lam is None for lam in self.lambdas.values())

    def calibrate(self, kd_parts_at_start: Mapping[str, float], base_loss: float) -> dict[str, float]:
        """Set every ``"auto"`` λ with ``calibrate_lambdas`` (fractions from config); returns all λ.

        ``kd_parts_at_start``: ``kd.parts(...)`` (tensors or floats) on the first batch(es); ``base_loss``: L0 there.
        """
        auto = {n: _to_float(kd_parts_at_start[n]) for n, lam in self.lambdas.items() if lam is None}
        self.lambdas.update(calibrate_lambdas(auto, base_loss, {n: self.fractions[n] for n in auto}))
        return dict(self.lambdas)

    def state_dict(self) -> dict:
        """The (calibrated) λ, for exact resume."""
        return {"lambdas": dict(self.lambdas)}

    def load_state_dict(self, state: Mapping) -> None:
        lambdas = dict(state["lambdas"])
        if set(lambdas) != set(self.lambdas):
            raise ConfigError(f"checkpoint KD losses {sorted(lambdas)} differ from the config's {sorted(self.lambdas)}")
        self.lambdas.update(lambdas)


def _check_rank(loss: str, side: str, feature: str, shape) -> None:
    shape = tuple(shape)
    vector = feature in ("vector", "edge_vector")
    ok = (len(shape) == 2 and shape[0] == 3) if vector else len(shape) == 1
    if not ok:
        want = "(3, C)" if vector else "(C,)"
        raise ConfigError(f"{loss}: {side} feature {feature!r} has per-atom shape {shape}, expected {want}")
