"""``TeacherSpec``: which teacher a stage uses (a spec string and its keyword arguments), parsed once at the edge.

Specs: ``chgnet`` / ``chgnet:<version>`` (default ``chgnet:0.3.0``), ``sevennet`` / ``sevennet:<model>``, ``emt``,
``ase:<module>.<Class>`` (kwargs passed to the class), ``ckpt:<augkd checkpoint>``, ``fairchem:<checkpoint path>``
(kwarg ``task_name``, default ``oc20``).

Every stage (generation, labelling, jitter, training, ``augkd relax``/``md``) loads its teacher with
``spec.load(device)``: one process cache, keyed by the spec's identity, the device and, for a teacher read from a
file, that file's inode, size and modification time (a checkpoint rewritten in place is loaded again).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from augkd.errors import ConfigError
from augkd.teachers.interface import Teacher
from augkd.vocabulary import teacher_help

DEFAULT_TEACHER = "chgnet"
#: backends of a spec (the part before the first ``:``)
BACKENDS = ("chgnet", "sevennet", "emt", "ckpt", "ase", "fairchem")
#: backends whose teachers run a torch model and predict on a batch (``TorchTeacher``)
TORCH_BACKENDS = ("ckpt", "chgnet", "sevennet", "fairchem")
#: backends whose argument is a file the weights are read from
_FILE_BACKENDS = ("ckpt", "fairchem")
#: teachers a process keeps loaded (one stage rarely uses more than one or two)
CACHE_SIZE = 4


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


@dataclass(frozen=True, eq=False)
class TeacherSpec:
    """A teacher spec string and its keyword arguments, checked when made (``ConfigError`` naming what is wrong).

    Equal and hashable by ``identity``. Nothing is imported or read until ``load``.
    """

    spec: str = DEFAULT_TEACHER
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str) or not self.spec:
            raise ConfigError(f"teacher spec {self.spec!r} must be a non-empty string (choose {teacher_help()})")
        kwargs = {} if self.kwargs is None else self.kwargs
        if not isinstance(kwargs, Mapping):
            raise ConfigError(f"teacher kwargs {kwargs!r} must be a mapping")
        object.__setattr__(self, "kwargs", dict(kwargs))
        backend, argument = self.backend, self.argument
        if backend == "ase":
            return
        if backend == "fairchem":
            unknown = sorted(set(self.kwargs) - {"task_name"})
            if unknown:
                raise ConfigError(f"teacher '{self.spec}' takes only task_name as kwarg (got {unknown})")
            if not argument:
                raise ConfigError("teacher 'fairchem:' needs a checkpoint path, e.g. fairchem:/models/uma-s.pt")
            return
        if self.kwargs:
            raise ConfigError(f"teacher '{self.spec}' takes no kwargs (got {sorted(self.kwargs)})")
        known = backend in ("chgnet", "sevennet") or (backend == "ckpt" and argument) or (backend == "emt" and not argument)
        if not known:
            raise ConfigError(f"unknown teacher '{self.spec}' (choose {teacher_help()})")

    @classmethod
    def of(cls, value: TeacherSpec | str) -> TeacherSpec:
        """``value`` itself when it is a spec already, else the spec of that string (no kwargs)."""
        return value if isinstance(value, TeacherSpec) else cls(value)

    @property
    def backend(self) -> str:
        return self.spec.partition(":")[0]

    @property
    def argument(self) -> str:
        return self.spec.partition(":")[2]

    @property
    def is_torch(self) -> bool:
        """Whether the teacher runs a torch model and predicts on a batch (a ``TorchTeacher``)."""
        return self.backend in TORCH_BACKENDS

    @property
    def identity(self) -> str:
        """The spec with its kwargs in a canonical order: what equality, hashing and the process cache use."""
        if not self.kwargs:
            return self.spec
        return f"{self.spec} {json.dumps(self.kwargs, sort_keys=True, default=str)}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TeacherSpec) and other.identity == self.identity

    def __hash__(self) -> int:
        return hash(self.identity)

    def __str__(self) -> str:
        return self.spec

    def load(self, device: str | None = "auto") -> Teacher:
        """The teacher, on ``device`` (``auto``: CUDA when visible; ASE calculators ignore it), loaded once per
        process."""
        return _load(self, resolve_device(device), self._file_stamp())

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self.backend not in _FILE_BACKENDS:
            return None
        try:
            stat = os.stat(self.argument)
        except OSError:
            return None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns


@lru_cache(maxsize=CACHE_SIZE)
def _load(spec: TeacherSpec, device: str, _file_stamp) -> Teacher:
    backend, argument = spec.backend, spec.argument
    if backend == "ase":
        from augkd.teachers.ase_calculator import load_ase_teacher

        return load_ase_teacher(argument, spec.kwargs)
    if backend == "fairchem":
        from augkd.teachers.fairchem import load_fairchem_teacher

        return load_fairchem_teacher(argument, device=device, **spec.kwargs)
    if backend == "ckpt":
        from augkd.teachers.checkpoint import CheckpointTeacher

        return CheckpointTeacher(argument, device=device)
    if backend == "emt":
        from augkd.teachers.ase_calculator import emt_teacher

        return emt_teacher()
    if backend == "chgnet":
        from augkd.teachers.chgnet import DEFAULT_VERSION, load_chgnet_teacher

        return load_chgnet_teacher(argument or DEFAULT_VERSION, device=device)
    from augkd.teachers.sevennet import DEFAULT_MODEL, load_sevennet_teacher

    return load_sevennet_teacher(argument or DEFAULT_MODEL, device=device)


def load_teacher(spec: str = DEFAULT_TEACHER, kwargs: dict | None = None, device: str | None = "auto") -> Teacher:
    """``TeacherSpec(spec, kwargs).load(device)``."""
    return TeacherSpec(spec, kwargs).load(device)
