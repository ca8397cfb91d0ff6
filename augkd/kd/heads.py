"""Student projection heads M_s for the feature KD losses (shared spec: a learned Linear, teacher side identity).

``ProjectionHeads`` is an ``nn.ModuleDict`` keyed by loss name: ``n2n`` and ``e2n`` map node features (N, C_s) →
(N, C_t) with a Linear (with bias); ``v2v`` maps vector features (N, 3, C_s) → (N, 3, C_t) with a Linear without
bias on the channel axis, which commutes with rotations of the 3-axis (keeps equivariance). A head is created for
each configured feature loss even when C_s == C_t; ``e2e`` maps per-edge features (E, C_s) → (E, C_t) with a Linear. The trainer attaches it to the student as ``student.kd_heads``
so it trains and checkpoints with it (state_dict keys ``kd_heads.*``); ``strip_kd_heads`` drops it for deployment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from augkd.errors import ConfigError
from augkd.kd.combine import KDLoss
from augkd.kd.features import HEAD_LOSSES, check_features, teacher_channels
from augkd.kd.targets import TeacherTargets
from augkd.models.interface import ModelOutput

HEADS_PREFIX = "kd_heads"


def feature_shapes(features) -> dict[str, tuple]:
    """Per-row shapes (leading atom/edge axis dropped), for ``KDLoss.check``/``ProjectionHeads``.

    ``features``: a features dict, or a ``ModelOutput``/``TeacherTargets`` (then derived edge features and
    ``"atom_energy": ()`` are listed too when present).
    """
    if isinstance(features, Mapping):
        return {name: tuple(t.shape[1:]) for name, t in features.items()}
    if isinstance(features, ModelOutput):
        features = TeacherTargets.from_output(features)
    shapes = {name: tuple(t.shape[1:]) for name, t in features.features.items()}
    if features.atom_energy is not None:
        shapes["atom_energy"] = ()
    return shapes


class ProjectionHeads(nn.ModuleDict):
    """One learned head per feature KD loss (n2n, e2n, v2v, e2e) in ``losses``; other loss names are ignored."""

    def __init__(
        self,
        student_shapes: Mapping[str, tuple],
        teacher_shapes: Mapping[str, tuple],
        losses: Iterable[str] | KDLoss,
    ):
        super().__init__()
        names = losses.names if isinstance(losses, KDLoss) else list(losses)
        head_names = [n for n in names if n in HEAD_LOSSES]
        twice = sorted({n for n in head_names if head_names.count(n) > 1})
        if twice:
            raise ConfigError(f"KD loss {twice[0]!r} is configured twice")
        check_features(head_names, student_shapes, teacher_shapes)
        for name in head_names:
            c_s = int(tuple(student_shapes[HEAD_LOSSES[name]])[-1])
            c_t = teacher_channels(name, teacher_shapes)
            self[name] = nn.Linear(c_s, c_t, bias=(name != "v2v"))


def strip_kd_heads(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of a student ``state_dict`` without its KD heads (any key with a ``kd_heads`` path component)."""
    return {k: v for k, v in state_dict.items() if HEADS_PREFIX not in k.split(".")}
