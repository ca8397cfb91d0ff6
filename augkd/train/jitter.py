"""Online jitter (``train.jitter``): an extra pseudo-loss on a displaced copy of part of each batch, labelled by the
online teacher at the displaced positions (shared spec, algorithms.md "Jitter": the research code's setting).

The displacements are ``augkd.generators.jitter``'s (the offline generator's): every free atom moves exactly
``norm`` Å, rattled or adversarial (student in eval mode for the attack). The first ``round(fraction·B)``
structures of a batch (at least one) get a copy; the batch order is already random. Rattle directions are seeded by
(seed, step, rank, position in the batch), so a resumed run draws what an uninterrupted one would have.
Pseudo-loss: ``weight``·(α_E·MAE(E_s, E_t) + α_F·L2MAE(F_s, F_t) over free atoms) on the copies, with the
training α and normaliser scales, i.e. vanilla(1) at X + δ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch

from augkd.errors import ConfigError
from augkd.generators.jitter import (
    ATTACK_LOSSES,
    Student,
    adversarial_displacement,
    check_attack_loss,
    check_norm,
    free_atoms,
    onto_sphere,
    rattle_directions,
)
from augkd.element_refs import reference_output


@dataclass(frozen=True)
class OnlineJitterConfig:
    """The ``jitter`` section of ``configs/train/*.yaml`` (see there)."""

    mode: str = "none"  # none | rattle | adversarial
    norm: float = 0.1  # Å
    fraction: float = 1.0
    weight: float = 1.0
    steps: int = 1
    attack_loss: str = "forces"
    all_atoms_free: bool = False
    force_large_norm: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("none", "rattle", "adversarial"):
            raise ConfigError(f"jitter.mode {self.mode!r} is not none, rattle or adversarial")
        if self.mode == "none":
            return
        object.__setattr__(self, "norm", check_norm(self.norm, self.force_large_norm))
        if not (isinstance(self.fraction, (int, float)) and 0 < self.fraction <= 1):
            raise ConfigError(f"jitter.fraction {self.fraction!r} must be in (0, 1]")
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight) and self.weight >= 0):
            raise ConfigError(f"jitter.weight {self.weight!r} must be ≥ 0")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"jitter.steps {self.steps!r} must be an integer ≥ 1")
        check_attack_loss(self.attack_loss)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> OnlineJitterConfig:
        values = dict(values or {})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown jitter key(s) {sorted(unknown)} (known: {sorted(f.name for f in fields(cls))})")
        return cls(**values)

    @property
    def enabled(self) -> bool:
        return self.mode != "none"


class OnlineJitter:
    """``loss(batch, student, teacher, step)`` → (weighted pseudo-loss, log) for the trainer's step."""

    def __init__(
        self, config: OnlineJitterConfig, *, seed: int, rank: int, alpha_energy: float, alpha_force: float,
        energy_scale: float, force_scale: float, teacher_refs: Any = None,
    ):
        assert config.mode in ("rattle", "adversarial") and config.attack_loss in ATTACK_LOSSES
        #: the teacher's element references (119 by Z) when the student learns referenced energies: the pseudo-loss
        #: targets are referenced with them, and the attacked student is put back on the teacher's scale
        self.teacher_refs = teacher_refs
        self.config = config
        self.seed, self.rank = seed, rank
        self.alpha_energy, self.alpha_force = alpha_energy, alpha_force
        self.energy_scale, self.force_scale = energy_scale, force_scale

    def displaced_copy(self, data, student: torch.nn.Module, teacher, step: int):
        """(the displaced sub-batch, detached; δ (N', 3) float64, stats) for a training batch ``data``."""
        from fairchem.core.datasets.atomic_data import atomicdata_list_to_batch

        config = self.config
        count = int(data.natoms.numel())
        chosen = max(1, min(count, round(config.fraction * count)))
        sub = data if chosen == count else atomicdata_list_to_batch(data.index_select(list(range(chosen))))
        free, uninformed = free_atoms(sub.fixed, sub.tags, sub.batch.long(), chosen, config.all_atoms_free)
        if uninformed.any() and not config.all_atoms_free:
            sid = sub.sid[int(torch.nonzero(uninformed)[0])] if getattr(sub, "sid", None) else "?"
            raise ConfigError(
                f"training row sid {sid!r} has no fixed atoms and no tags, so online jitter does not know which atoms "
                "may move; set jitter.all_atoms_free=true to move them all"
            )
        keys = [[self.seed, step, self.rank, position] for position in range(chosen)]
        directions = rattle_directions(keys, sub.natoms.tolist()).to(sub.pos.device)
        stats: dict[str, Any] = {}
        if config.mode == "rattle":
            delta, _ = onto_sphere(directions, free, config.norm, directions)
        else:
            model = student if self.teacher_refs is None else _TeacherScale(student, self.teacher_refs)
            attacked = Student(model, student.name, self.energy_scale, self.force_scale)
            delta, stats = adversarial_displacement(
                sub, free, directions, torch.zeros(chosen, dtype=torch.bool), attacked, teacher, config.norm,
                config.steps, None, config.attack_loss,
            )
        moved = sub.clone()
        moved.pos = (sub.pos.detach().to(torch.float64) + delta).to(sub.pos.dtype)
        return moved, delta, stats

    def loss(self, data, student: torch.nn.Module, teacher, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """``student`` is the trained module itself (not a DDP wrapper): its forward here adds to the same backward."""
        from augkd.kd.losses import ocp_loss
        from augkd.kd.targets import TeacherTargets
        from augkd.reductions import LossBatch

        moved, _, stats = self.displaced_copy(data, student, teacher, step)
        prediction = teacher.predict(moved)
        if self.teacher_refs is not None:
            prediction = reference_output(prediction, moved, self.teacher_refs, sign=-1.0)
        targets = TeacherTargets.from_output(prediction)
        output = student(moved)
        pseudo, parts = ocp_loss(
            output.energy, output.forces, targets.energy.to(output.energy.device), targets.forces.to(output.forces.device),
            LossBatch.from_data(moved), alpha_energy=self.alpha_energy, alpha_force=self.alpha_force,
            energy_scale=self.energy_scale, force_scale=self.force_scale,
        )
        log = {"loss_jitter": float(pseudo.detach()), "jitter_energy": parts["energy"], "jitter_forces": parts["forces"]}
        if "fallback_directions" in stats:
            log["jitter_fallbacks"] = float(stats["fallback_directions"])
        return self.config.weight * pseudo, log


class _TeacherScale(torch.nn.Module):
    """A student that learns referenced energies, with the teacher's references added back: the attack compares it
    with the teacher's own (unreferenced) outputs."""

    def __init__(self, model: torch.nn.Module, teacher_refs: Any):
        super().__init__()
        self.model, self.teacher_refs = model, teacher_refs

    def forward(self, data):
        return reference_output(self.model(data), data, self.teacher_refs, sign=1.0)
