"""Cached teacher outputs: label existing frames with a teacher's energy, forces, per-atom energies and features.

The trainer then reads them instead of running the teacher (shared spec, algorithms.md: cached features are valid
only for the exact positions they were computed on, so online jitter still needs the online teacher).
Row ``data`` keys written: ``teacher_name``, ``teacher_energy`` (eV), ``teacher_forces`` (N×3 eV/Å, float32),
``teacher_atom_energy`` (N, eV, float32), ``teacher_features`` ({name: array}, float16 by default); arrays are
stored with ``augkd.io.arrays``-style base64 encoding, produced here by ``encode``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Iterable

from augkd.errors import ConfigError
from augkd.records import LabelledFrame
from augkd.teachers import Labels, Teacher, TeacherSpec
from augkd.teachers.interface import check_properties

OUTPUTS = ("energy", "forces", "atom_energy")
FEATURE_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class CachedOutputs:
    """Teacher outputs stored in a row beside its labels: per-atom energies and named features.

    features: feature names (a comma-separated string is split). atom_energy: store per-atom energies (eV).
    dtype: how features are stored (float16 or float32; per-atom energies and forces are float32).
    """

    features: tuple[str, ...] = ()
    atom_energy: bool = False
    dtype: str = "float16"

    def __post_init__(self) -> None:
        features = self.features.split(",") if isinstance(self.features, str) else self.features
        object.__setattr__(self, "features", tuple(name for name in features if name))
        if self.dtype not in FEATURE_DTYPES:
            raise ConfigError(f"feature dtype {self.dtype!r} must be float16 or float32")

    def __bool__(self) -> bool:
        return bool(self.features) or self.atom_energy

    @property
    def names(self) -> tuple[str, ...]:
        """What is cached beyond energy and forces: ``atom_energy`` (when asked for), then the features."""
        return (*(("atom_energy",) if self.atom_energy else ()), *self.features)

    @property
    def properties(self) -> list[str]:
        """What to ask the teacher for: energy and forces, plus per-atom energies and the features."""
        return ["energy", "forces", *self.names]


@dataclass(frozen=True)
class LabelConfig:
    teacher: str
    teacher_kwargs: dict
    features: tuple[str, ...] = ()  # e.g. ("node",), ("node", "vector")
    atom_energy: bool = True
    feature_dtype: str = "float16"

    def __post_init__(self) -> None:
        _ = self.teacher_spec, self.outputs  # both checked once, here

    @cached_property
    def teacher_spec(self) -> TeacherSpec:
        return TeacherSpec(self.teacher, self.teacher_kwargs)

    @cached_property
    def outputs(self) -> CachedOutputs:
        return CachedOutputs(self.features, self.atom_energy, self.feature_dtype)


def check_teacher_offers(teacher: Teacher, outputs: CachedOutputs) -> None:
    per_edge = [name for name in outputs.features if name in teacher.per_edge_features()]
    if per_edge:
        raise ConfigError(
            f"teacher {teacher.identity.name}: feature(s) {per_edge} have one row per edge and cannot be cached "
            "per atom; cache 'edge2node' / 'edge_vector' instead"
        )
    check_properties(teacher.identity.name, list(outputs.names), teacher.offered_properties)


def teacher_row_data(labels: Labels, teacher_name: str, outputs: CachedOutputs, encode: Callable) -> dict:
    """The ``teacher_*`` keys of a row's ``data`` for a teacher's ``labels`` (see the module docstring)."""
    data = {
        "teacher_name": teacher_name,
        "teacher_energy": float(labels.energy),
        "teacher_forces": encode(labels.forces, "float32"),
    }
    if outputs.atom_energy:
        data["teacher_atom_energy"] = encode(labels.atom_energy, "float32")
    if outputs.features:
        data["teacher_features"] = {name: encode(labels.features[name], outputs.dtype) for name in outputs.features}
    return data


def label_frames(
    frames: Iterable[LabelledFrame],
    teacher: Teacher,
    outputs: CachedOutputs,
    encode: Callable,
    progress: Callable[[int], None] | None = None,
) -> list[LabelledFrame]:
    """Copies of ``frames`` whose ``data`` carries the teacher's outputs (the frames' own labels are kept)."""
    properties = outputs.properties
    out = []
    for frame in frames:
        labels = teacher.label(frame.atoms, properties)
        data = {**frame.data, **teacher_row_data(labels, teacher.identity.name, outputs, encode)}
        out.append(LabelledFrame(frame.atoms, frame.energy, frame.forces, data))
        if progress is not None:
            progress(1)
    return out
