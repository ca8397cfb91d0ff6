"""The KD feature vocabulary: which student feature and which teacher features each KD loss reads (shared spec,
algorithms.md "Features each model exposes" and "KD losses").

Feature names and per-row layouts are those of ``augkd.models.interface.FEATURE_KINDS``: ``node`` (C,),
``vector`` (3, C), per-edge ``edge`` (C,), and two teacher features derived from ``edge`` with the edge graph,
``edge2node`` (C,) and ``edge_vector`` (3, C); ``atom_energy`` is the per-atom energy (a scalar per atom).
The loss names are ``augkd.vocabulary.KD_LOSS_NAMES`` (the one list a user types); this module says what each
of them reads, and validates feature shapes against it before any tensor exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from augkd.errors import ConfigError


@dataclass(frozen=True)
class LossFeatures:
    """What one KD loss reads besides energies and forces."""

    student: str | None  # the student feature its projection head maps; None: no head (outputs only)
    teacher: tuple[str, ...]  # teacher features that satisfy it, in order of preference; () = energy/forces only


#: Every KD loss of ``augkd.vocabulary.KD_LOSS_NAMES``, in that order.
LOSS_FEATURES = {
    "vanilla1": LossFeatures(student=None, teacher=()),
    "vanilla2": LossFeatures(student=None, teacher=("atom_energy",)),
    "n2n": LossFeatures(student="node", teacher=("node",)),
    "e2n": LossFeatures(student="node", teacher=("edge2node", "edge")),
    "v2v": LossFeatures(student="vector", teacher=("vector", "edge_vector", "edge")),
    "e2e": LossFeatures(student="edge", teacher=("edge",)),
}

#: The loss that owns each projection head (and the student feature it maps).
HEAD_LOSSES = {name: use.student for name, use in LOSS_FEATURES.items() if use.student is not None}

#: Teacher feature names that satisfy each loss, in order of preference.
TEACHER_FEATURES = {name: use.teacher for name, use in LOSS_FEATURES.items() if use.teacher}

#: What a loss reads when the teacher only has raw per-edge 'edge' features (derived with the edge graph).
_FROM_EDGE = {"e2n": "edge2node", "v2v": "edge_vector"}

_VECTOR_FEATURES = ("vector", "edge_vector")


def resolve_teacher_feature(loss_name: str, available: Iterable[str]) -> str | None:
    """Which teacher feature loss ``loss_name`` uses given the ``available`` names (raw 'edge' → derived name)."""
    available = set(available)
    for name in TEACHER_FEATURES.get(loss_name, ()):
        if name in available:
            if name == "edge":
                return _FROM_EDGE.get(loss_name, "edge")
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


def required_teacher_features(loss_names: Iterable[str]) -> list[str]:
    """Teacher quantities to request or cache beyond energy/forces for ``loss_names``: e.g. ``["node",
    "edge2node"]`` (each loss's preferred one; e2n is also satisfied by raw 'edge', v2v by 'edge'/'edge_vector')."""
    return [TEACHER_FEATURES[name][0] for name in loss_names if name in TEACHER_FEATURES]


def check_features(
    loss_names: Iterable[str],
    student_feature_shapes: Mapping[str, tuple],
    teacher_feature_shapes: Mapping[str, tuple],
    student_name: str = "the student",
    teacher_name: str = "the teacher",
) -> None:
    """Raise ``ConfigError`` naming the loss and the missing/mismatched feature.

    Shapes are per row (no leading atom/edge axis): node/edge/edge2node (C,), vector/edge_vector (3, C); list
    ``"atom_energy": ()`` among the teacher's when it provides per-atom energies.
    """
    for name in loss_names:
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


def teacher_channels(loss_name: str, teacher_feature_shapes: Mapping[str, tuple]) -> int:
    """Channel count of the teacher target of head loss ``loss_name`` (after ``check_features``)."""
    resolved = resolve_teacher_feature(loss_name, teacher_feature_shapes)
    source = resolved if resolved in teacher_feature_shapes else "edge"
    return int(tuple(teacher_feature_shapes[source])[-1])


def _check_rank(loss: str, side: str, feature: str, shape) -> None:
    shape = tuple(shape)
    vector = feature in _VECTOR_FEATURES
    ok = (len(shape) == 2 and shape[0] == 3) if vector else len(shape) == 1
    if not ok:
        want = "(3, C)" if vector else "(C,)"
        raise ConfigError(f"{loss}: {side} feature {feature!r} has per-atom shape {shape}, expected {want}")
