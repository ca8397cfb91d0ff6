"""The Teacher protocol: a named object that labels structures, and what it declares about itself.

Like an ASE Calculator, a caller asks for properties of an ``Atoms`` and never needs to know which backend is
behind it. ``calculator()`` hands out an ASE calculator for code that drives ASE (optimizers, MD).

Properties a caller may ask ``label`` / ``label_batch`` for: ``"energy"`` and ``"forces"`` (every teacher),
``"atom_energy"`` (per-atom contributions in eV that sum to the energy, when the teacher has them) and feature names
from ``feature_shapes()`` (``"node"``: (N, C) scalars, ``"vector"``: (N, 3, C) equivariant vectors with the 3 axis in
x, y, z order; see ``augkd.models.interface.FEATURE_KINDS``) except those in ``per_edge_features()`` (one row per
graph edge: ``predict`` gives them, per-atom labels cannot). ``offered_properties`` lists them. Asking for anything
else raises ``ValueError`` naming the property and what the teacher offers. Energy and forces are always returned;
the rest only when asked for.

Torch teachers (``TorchTeacher``) also offer ``predict(batch) -> ModelOutput`` on a fairchem ``AtomicData`` batch.
Those whose ``differentiable`` is True also take ``predict(batch, differentiable=True)``: outputs that autograd
follows back to ``batch.pos`` (forces included), for adversarial displacements (augkd ``ckpt:`` models, CHGNet and
SevenNet; fairchem checkpoints are not: their predict unit detaches, so their outputs are constants to an attack).

A caller tells the two apart with ``isinstance(teacher, TorchTeacher)``; every member below is declared by every
teacher (``augkd.teachers.base`` gives the defaults), so nothing is probed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from augkd.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from augkd.models.interface import ModelOutput

#: Properties that are not hidden features.
OUTPUT_PROPERTIES = ("energy", "forces", "atom_energy")


@dataclass(frozen=True)
class TeacherIdentity:
    """Provenance of a teacher: enough to tell two teachers apart and to find the weights again."""

    name: str  # e.g. "chgnet-0.3.0", "emt"
    kind: str  # backend: "chgnet", "sevennet", "ase", ...
    checkpoint: str | None = None  # weights file, when there is one
    weights_sha256: str | None = None  # sha256 of the weights (or of the parameters that define the model)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Labels:
    """What a teacher says about one structure."""

    energy: float  # eV, total
    forces: np.ndarray  # (N, 3) eV/Å, unconstrained
    atom_energy: np.ndarray | None = None  # (N,) eV, when the teacher provides it
    features: dict[str, np.ndarray] = field(default_factory=dict)  # named hidden features, (N, *feature_shape)


@dataclass(frozen=True)
class GraphCutoff:
    """The neighbour graph a teacher builds: pairs within ``cutoff`` Å, at most ``max_neighbors`` per atom."""

    cutoff: float  # Å
    max_neighbors: int | None = None  # None: no cap


@runtime_checkable
class Teacher(Protocol):
    identity: TeacherIdentity
    #: chemical symbols the teacher can label; None means any
    elements: frozenset[str] | None
    #: where the teacher computes (ASE calculators: the CPU)
    device: torch.device
    #: the float dtype positions are handed to it in (float64 unless its model runs in another)
    dtype: torch.dtype
    #: whether its forces are −∇E (None: not known)
    conservative: bool | None
    #: what ``label`` can return: energy, forces, then atom_energy and feature names where the teacher has them
    offered_properties: tuple[str, ...]

    def label(self, atoms: Atoms, properties: Sequence[str] = ("energy", "forces")) -> Labels: ...

    def label_batch(self, atoms_list: Sequence[Atoms], properties: Sequence[str] = ("energy", "forces")) -> list[Labels]:
        """``label`` of each structure, with batched model calls where the teacher has them."""
        ...

    def calculator(self) -> Calculator: ...

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-atom trailing shape of each named feature, e.g. ``{"node": (64,)}``; empty when there are none."""
        ...

    def per_edge_features(self) -> tuple[str, ...]:
        """Features with one row per graph edge (``predict`` gives them, ``label`` cannot); usually none."""
        ...

    def graph_cutoff(self) -> GraphCutoff | None:
        """The teacher's neighbour graph (for counting edges), or None when it does not say."""
        ...


@runtime_checkable
class TorchTeacher(Teacher, Protocol):
    #: whether ``predict(batch, differentiable=True)`` is supported
    differentiable: bool

    def predict(self, batch, differentiable: bool = False) -> ModelOutput:
        """Energy (B,), forces (N, 3), atom_energy (N,) and every feature for a fairchem ``AtomicData`` batch.

        Tensors are detached, on CPU, float32, atoms in batch order. With ``differentiable=True`` (only where the
        teacher's ``differentiable`` is True) energy, forces and atom_energy keep their autograd graph to
        ``batch.pos``.
        """
        ...


def check_properties(teacher_name: str, properties: Sequence[str], offered: Sequence[str]) -> set[str]:
    """The requested properties as a set; a ConfigError (a ValueError) naming what is not offered, and what is."""
    if isinstance(properties, str):
        properties = (properties,)
    unsupported = [p for p in properties if p not in offered]
    if unsupported:
        raise ConfigError(
            f"teacher {teacher_name} cannot provide {', '.join(map(repr, unsupported))} "
            f"(it offers: {', '.join(offered)})"
        )
    return set(properties)
