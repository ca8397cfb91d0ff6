"""Teachers: objects that label structures (energy, forces, ...). ``load_teacher(spec)`` resolves a spec string.

Specs: ``chgnet`` / ``chgnet:<version>`` (default ``chgnet:0.3.0``), ``sevennet`` / ``sevennet:<model>``, ``emt``,
``ase:<module>.<Class>`` (kwargs passed separately), ``fairchem:<checkpoint path>`` (kwarg ``task_name``, default
``oc20``).
"""

from __future__ import annotations

from augkd.errors import ConfigError
from augkd.teachers.interface import CalculatorTeacher, Labels, Teacher, TeacherIdentity

DEFAULT_TEACHER = "chgnet"


def load_teacher(spec: str = DEFAULT_TEACHER, kwargs: dict | None = None, device: str = "cpu") -> Teacher:
    backend, _, argument = spec.partition(":")
    if backend == "ase":
        from augkd.teachers.ase_calculator import load_ase_teacher

        return load_ase_teacher(argument, kwargs)
    if backend == "fairchem":
        from augkd.teachers.fairchem import load_fairchem_teacher

        options = dict(kwargs or {})
        unknown = sorted(set(options) - {"task_name"})
        if unknown:
            raise ConfigError(f"teacher '{spec}' takes only task_name as kwarg (got {unknown})")
        return load_fairchem_teacher(argument, device=device, **options)
    if kwargs:
        raise ConfigError(f"teacher '{spec}' takes no kwargs (got {sorted(kwargs)})")
    if backend == "ckpt" and argument:
        from augkd.teachers.checkpoint import CheckpointTeacher

        return CheckpointTeacher(argument, device=device)
    if backend == "emt" and not argument:
        from augkd.teachers.ase_calculator import emt_teacher

        return emt_teacher()
    if backend == "chgnet":
        from augkd.teachers.chgnet import DEFAULT_VERSION, load_chgnet_teacher

        return load_chgnet_teacher(argument or DEFAULT_VERSION, device=device)
    if backend == "sevennet":
        from augkd.teachers.sevennet import DEFAULT_MODEL, load_sevennet_teacher

        return load_sevennet_teacher(argument or DEFAULT_MODEL, device=device)
    raise ConfigError(
        f"unknown teacher '{spec}' (choose chgnet[:version], sevennet[:model], fairchem:<path>, emt or ase:<module.Class>)"
    )


__all__ = ["CalculatorTeacher", "Labels", "Teacher", "TeacherIdentity", "load_teacher", "DEFAULT_TEACHER"]
