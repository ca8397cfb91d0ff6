"""Σ_k λ_k·L_KD,k: the configured KD losses combined, each with its λ (a number, or ``"auto"``: see
``calibrate_lambdas``), shared spec algorithms.md "KD losses"."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

from augkd.errors import ConfigError
from augkd.kd.features import check_features, required_teacher_features
from augkd.kd.losses import (
    Edge2EdgeLoss,
    Edge2NodeLoss,
    Heads,
    Node2NodeLoss,
    Vanilla1Loss,
    Vanilla2Loss,
    Vector2VectorLoss,
)
from augkd.kd.targets import TeacherTargets
from augkd.models.interface import ModelOutput
from augkd.reductions import LossBatch
from augkd.vocabulary import KD_LOSS_NAMES

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
        return required_teacher_features(self.losses)

    def check(
        self,
        student_feature_shapes: Mapping[str, tuple],
        teacher_feature_shapes: Mapping[str, tuple],
        student_name: str = "the student",
        teacher_name: str = "the teacher",
    ) -> None:
        """``features.check_features`` for this loss's terms (shapes per row, as documented there)."""
        check_features(self.losses, student_feature_shapes, teacher_feature_shapes, student_name, teacher_name)

    def parts(
        self, student: ModelOutput, teacher: TeacherTargets, info: LossBatch, heads: Heads | None = None, *,
        sample_weight: torch.Tensor | None = None, atom_weight: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Unscaled KD losses by name (tensors with grad)."""
        return {
            name: loss(student, teacher, info, heads, sample_weight=sample_weight, atom_weight=atom_weight)
            for name, loss in self.losses.items()
        }

    def __call__(
        self, student: ModelOutput, teacher: TeacherTargets, info: LossBatch, heads: Heads | None = None,
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
