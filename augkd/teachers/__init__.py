"""Teachers: objects that label structures (energy, forces, ...), named by a ``TeacherSpec`` and loaded with its
``load(device)``.

``interface``: the protocol (``Teacher``, ``TorchTeacher``), ``Labels``, ``TeacherIdentity``; ``base``: the base
classes; ``spec``: ``TeacherSpec`` and the process cache; one module per backend (``ase_calculator``, ``checkpoint``,
``chgnet``, ``sevennet``, ``fairchem``).
"""

from __future__ import annotations

from augkd.teachers.interface import GraphCutoff, Labels, Teacher, TeacherIdentity, TorchTeacher
from augkd.teachers.spec import DEFAULT_TEACHER, TeacherSpec, load_teacher, resolve_device

__all__ = [
    "DEFAULT_TEACHER",
    "GraphCutoff",
    "Labels",
    "Teacher",
    "TeacherIdentity",
    "TeacherSpec",
    "TorchTeacher",
    "load_teacher",
    "resolve_device",
]
