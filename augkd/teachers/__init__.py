"""Teachers: objects that label structures (energy, forces, ...). ``load_teacher(spec)`` resolves a spec string.

Specs: ``chgnet`` / ``chgnet:<version>`` (default ``chgnet:0.3.0``), ``sevennet`` / ``sevennet:<model>``, ``emt``,
``ase:<module>.<Class>`` (kwargs passed separately), ``fairchem:<checkpoint path>`` (kwarg ``task_name``, default
``oc20``).
"""

from __future__ import annotations

from augkd.errors import ConfigError
from augkd.teachers.interface import CalculatorTeacher, Labels, Teacher, TeacherIdentity
from augkd.vocabulary import teacher_help

DEFAULT_TEACHER = "chgnet"


def resolve_device(device: str | None) -> str:
    """``auto`` (or None) → ``cuda`` when this process sees a CUDA device, else ``cpu``; other names are checked.

    Resolved in the process that loads the teacher: a Dask worker or SLURM task pinned to one GPU through
    CUDA_VISIBLE_DEVICES sees exactly that GPU as ``cuda``.
    """
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if parsed.type == "cpu":
        return str(parsed)
    if parsed.type != "cuda":
        raise ConfigError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible == 0:
        raise ConfigError(f"--device {device}: this process sees no CUDA device")
    if parsed.index is not None and parsed.index >= visible:
        raise ConfigError(f"--device {device}: this process sees {visible} CUDA device(s) (cuda:0..cuda:{visible - 1})")
    return str(parsed)


def load_teacher(spec: str = DEFAULT_TEACHER, kwargs: dict | None = None, device: str | None = "auto") -> Teacher:
    """The teacher ``spec`` names, on ``device`` (``auto``: CUDA when visible; ASE calculators ignore it)."""
    device = resolve_device(device)
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
    raise ConfigError(f"unknown teacher '{spec}' (choose {teacher_help()})")


__all__ = ["CalculatorTeacher", "Labels", "Teacher", "TeacherIdentity", "load_teacher", "resolve_device", "DEFAULT_TEACHER"]
