"""Cached teacher outputs: label existing frames with a teacher's energy, forces, per-atom energies and features.

The trainer then reads them instead of running the teacher (shared spec, algorithms.md: cached features are valid
only for the exact positions they were computed on, so online jitter still needs the online teacher).
Row ``data`` keys written: ``teacher_name``, ``teacher_energy`` (eV), ``teacher_forces`` (N×3 eV/Å, float32),
``teacher_atom_energy`` (N, eV, float32), ``teacher_features`` ({name: array}, float16 by default); arrays are
stored with ``augkd.io.arrays``-style base64 encoding, produced here by ``encode``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from ase import Atoms

from augkd.errors import ConfigError
from augkd.records import LabelledFrame
from augkd.teachers import Labels, Teacher
from augkd.teachers.interface import check_properties

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
    per_edge = [name for name in config.features if name in getattr(teacher, "per_edge_features", tuple)()]
    if per_edge:
        raise ConfigError(
            f"teacher {teacher.identity.name}: feature(s) {per_edge} have one row per edge and cannot be cached "
            "per atom; cache 'edge2node' / 'edge_vector' instead"
        )
    wanted = ["atom_energy"] * config.atom_energy + list(config.features)
    check_properties(teacher.identity.name, wanted, teacher.offered_properties)


def label_properties(config: LabelConfig) -> list[str]:
    """What to ask the teacher for: energy and forces, plus per-atom energies and the configured features."""
    return ["energy", "forces"] + (["atom_energy"] if config.atom_energy else []) + list(config.features)


def label_structures(teacher: Teacher, atoms_list: Sequence[Atoms], properties: Sequence[str]) -> list[Labels]:
    """The teacher's labels of many structures: batched model calls where the teacher offers ``label_batch``."""
    batched = getattr(teacher, "label_batch", None)
    if batched is not None:
        return batched(atoms_list, properties)
    return [teacher.label(atoms, properties) for atoms in atoms_list]


def teacher_row_data(labels: Labels, teacher_name: str, config: LabelConfig, encode: Callable) -> dict:
    """The ``teacher_*`` keys of a row's ``data`` for a teacher's ``labels`` (see the module docstring)."""
    data = {
        "teacher_name": teacher_name,
        "teacher_energy": float(labels.energy),
        "teacher_forces": encode(labels.forces, "float32"),
    }
    if config.atom_energy:
        data["teacher_atom_energy"] = encode(labels.atom_energy, "float32")
    if config.features:
        data["teacher_features"] = {name: encode(labels.features[name], config.feature_dtype) for name in config.features}
    return data


def label_frames(
    frames: Iterable[LabelledFrame],
    teacher: Teacher,
    config: LabelConfig,
    encode: Callable,
    progress: Callable[[int], None] | None = None,
) -> list[LabelledFrame]:
    """Copies of ``frames`` whose ``data`` carries the teacher's outputs (the frames' own labels are kept)."""
    properties = label_properties(config)
    out = []
    for frame in frames:
        labels = teacher.label(frame.atoms, properties)
        data = {**frame.data, **teacher_row_data(labels, teacher.identity.name, config, encode)}
        out.append(LabelledFrame(frame.atoms, frame.energy, frame.forces, data))
        if progress is not None:
            progress(1)
    return out
