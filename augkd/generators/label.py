"""Cached teacher outputs: label existing frames with a teacher's energy, forces, per-atom energies and features.

The trainer then reads them instead of running the teacher (shared spec, algorithms.md: cached features are valid
only for the exact positions they were computed on, so online jitter still needs the online teacher).
Row ``data`` keys written: ``teacher_name``, ``teacher_energy`` (eV), ``teacher_forces`` (N×3 eV/Å, float32),
``teacher_atom_energy`` (N, eV, float32), ``teacher_features`` ({name: array}, float16 by default); arrays are
stored with ``augkd.io.arrays``-style base64 encoding, produced here by ``encode``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from augkd.errors import ConfigError
from augkd.records import LabelledFrame
from augkd.teachers import Teacher

OUTPUTS = ("energy", "forces", "atom_energy")


@dataclass(frozen=True)
class LabelConfig:
    teacher: str
    teacher_kwargs: dict
    features: tuple[str, ...] = ()  # e.g. ("node",), ("node", "vector")
    atom_energy: bool = True
    feature_dtype: str = "float16"

    def __post_init__(self) -> None:
        if self.feature_dtype not in ("float16", "float32"):
            raise ConfigError(f"feature dtype {self.feature_dtype!r} must be float16 or float32")


def check_teacher_offers(teacher: Teacher, config: LabelConfig) -> None:
    shapes = teacher.feature_shapes() if hasattr(teacher, "feature_shapes") else {}
    missing = [name for name in config.features if name not in shapes]
    if missing:
        raise ConfigError(
            f"teacher {teacher.identity.name} has no feature(s) {missing}; it provides {sorted(shapes) or 'none'}"
        )


def label_frames(
    frames: Iterable[LabelledFrame],
    teacher: Teacher,
    config: LabelConfig,
    encode: Callable,
    progress: Callable[[int], None] | None = None,
) -> list[LabelledFrame]:
    """Copies of ``frames`` whose ``data`` carries the teacher's outputs (the frames' own labels are kept)."""
    properties = ["energy", "forces"] + (["atom_energy"] if config.atom_energy else []) + list(config.features)
    out = []
    for frame in frames:
        labels = teacher.label(frame.atoms, properties)
        data = dict(frame.data)
        data.update(
            teacher_output_data(
                teacher.identity.name, labels.energy, labels.forces,
                labels.atom_energy if config.atom_energy else None,
                {name: labels.features[name] for name in config.features}, encode, config.feature_dtype,
            )
        )
        out.append(LabelledFrame(frame.atoms, frame.energy, frame.forces, data))
        if progress is not None:
            progress(1)
    return out


def teacher_output_data(
    teacher_name: str,
    energy: float,
    forces,
    atom_energy,
    features: dict,
    encode: Callable,
    feature_dtype: str = "float16",
) -> dict:
    """The row ``data`` entries of cached teacher outputs (keys in the module docstring); ``atom_energy`` may be None."""
    data = {"teacher_name": teacher_name, "teacher_energy": float(energy), "teacher_forces": encode(forces, "float32")}
    if atom_energy is not None:
        data["teacher_atom_energy"] = encode(atom_energy, "float32")
    if features:
        data["teacher_features"] = {name: encode(value, feature_dtype) for name, value in features.items()}
    return data
