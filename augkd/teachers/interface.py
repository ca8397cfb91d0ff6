"""The Teacher protocol: a named object that labels structures.

Like an ASE Calculator, a caller asks for properties of an ``Atoms`` and never needs to know which backend is
behind it. ``calculator()`` hands out an ASE calculator for code that drives ASE (optimizers, MD).

Properties a caller may ask ``label`` for: ``"energy"`` and ``"forces"`` (every teacher), ``"atom_energy"``
(per-atom contributions in eV that sum to the energy, when the teacher has them) and feature names from
``feature_shapes()`` (``"node"``: (N, C) scalars, ``"vector"``: (N, 3, C) equivariant vectors with the 3 axis in
x, y, z order; see ``augkd.models.interface.FEATURE_KINDS``). Asking for anything else raises ``ValueError`` naming
the property and what the teacher offers. Energy and forces are always returned; the rest only when asked for.

Torch teachers also offer ``predict(batch) -> ModelOutput`` on a fairchem ``AtomicData`` batch (``TorchTeacher``).
Those whose class attribute ``differentiable`` is True also take ``predict(batch, differentiable=True)``: outputs
that autograd follows back to ``batch.pos`` (forces included), for adversarial displacements (augkd ``ckpt:``
models, CHGNet and SevenNet; fairchem checkpoints are not: their predict unit detaches, so their outputs are
constants to an attack).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from augkd.errors import ConfigError
from augkd.hashing import sha256_file, sha256_text  # noqa: F401  (the teachers' modules import them from here)

if TYPE_CHECKING:
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


@runtime_checkable
class Teacher(Protocol):
    identity: TeacherIdentity
    #: chemical symbols the teacher can label; None means any
    elements: frozenset[str] | None

    #: what ``label`` can return: energy, forces, then atom_energy and feature names where the teacher has them
    offered_properties: tuple[str, ...]

    def label(self, atoms: Atoms, properties: Sequence[str] = ("energy", "forces")) -> Labels: ...

    def calculator(self) -> Calculator: ...

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-atom trailing shape of each named feature, e.g. ``{"node": (64,)}``; empty when there are none."""
        ...


@runtime_checkable
class TorchTeacher(Teacher, Protocol):
    differentiable: bool

    def predict(self, batch, differentiable: bool = False) -> ModelOutput:
        """Energy (B,), forces (N, 3), atom_energy (N,) and every feature for a fairchem ``AtomicData`` batch.

        Tensors are detached, on CPU, float32, atoms in batch order. With ``differentiable=True`` (only where the
        class sets ``differentiable``) energy, forces and atom_energy keep their autograd graph to ``batch.pos``.
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


def split_output(output: ModelOutput, natoms: Sequence[int], wanted: set[str]) -> list[Labels]:
    """Per-structure ``Labels`` (float64 energy/forces/atom_energy, features as given) of a batched output."""
    ends = np.cumsum([0, *natoms])
    forces = output.forces.detach().cpu().numpy().astype(np.float64)
    atom_energy = output.atom_energy.detach().cpu().numpy().astype(np.float64) if "atom_energy" in wanted else None
    features = {name: value.detach().cpu().numpy() for name, value in output.features.items() if name in wanted}
    energies = output.energy.detach().cpu().double().tolist()
    return [
        Labels(
            energy=float(energies[i]),
            forces=forces[start:end],
            atom_energy=None if atom_energy is None else atom_energy[start:end],
            features={name: value[start:end] for name, value in features.items()},
        )
        for i, (start, end) in enumerate(itertools.pairwise(ends))
    ]


class CalculatorTeacher:
    """A teacher backed by one ASE calculator: labels come from ``get_potential_energy``/``get_forces``."""

    offered_properties = ("energy", "forces")

    def __init__(self, identity: TeacherIdentity, calculator: Calculator, elements: frozenset[str] | None):
        self.identity = identity
        self.elements = elements
        self._calculator = calculator

    def calculator(self) -> Calculator:
        return self._calculator

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def label(self, atoms: Atoms, properties: Sequence[str] = ("energy", "forces")) -> Labels:
        check_properties(self.identity.name, properties, self.offered_properties)
        atoms = atoms.copy()
        atoms.calc = self._calculator
        energy = float(atoms.get_potential_energy())
        forces = np.array(atoms.get_forces(apply_constraint=False), dtype=np.float64)
        return Labels(energy=energy, forces=forces)

    def label_batch(self, atoms_list: Sequence[Atoms], properties: Sequence[str] = ("energy", "forces")) -> list[Labels]:
        """``label`` of each structure (an ASE calculator takes one structure at a time)."""
        return [self.label(atoms, properties) for atoms in atoms_list]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity.name})"


class ModelTeacher:
    """Base of the teachers backed by a torch model (CHGNet, SevenNet, fairchem).

    ``label`` with energy and forces only goes through the ASE calculator (the path relaxations use, untouched by
    any hook); asking for ``atom_energy`` or a feature runs the model once with forward hooks that are removed
    again afterwards. Subclasses implement ``_forward_atoms(atoms_list) -> ModelOutput``; ``predict(batch)``
    defaults to that on ``batch.to_ase()``.
    """

    def __init__(
        self,
        identity: TeacherIdentity,
        calculator: Calculator,
        elements: frozenset[str] | None,
        feature_shapes: dict[str, tuple[int, ...]],
        has_atom_energy: bool = True,
    ):
        self.identity = identity
        self.elements = elements
        self._calculator = calculator
        self._feature_shapes = dict(feature_shapes)
        self._has_atom_energy = has_atom_energy

    def calculator(self) -> Calculator:
        return self._calculator

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._feature_shapes)

    @property
    def offered_properties(self) -> tuple[str, ...]:
        outputs = OUTPUT_PROPERTIES if self._has_atom_energy else ("energy", "forces")
        return (*outputs, *self._feature_shapes)

    def label(self, atoms: Atoms, properties: Sequence[str] = ("energy", "forces")) -> Labels:
        wanted = check_properties(self.identity.name, properties, self.offered_properties)
        if wanted <= {"energy", "forces"}:
            atoms = atoms.copy()
            atoms.calc = self._calculator
            energy = float(atoms.get_potential_energy())
            forces = np.array(atoms.get_forces(apply_constraint=False), dtype=np.float64)
            return Labels(energy=energy, forces=forces)
        output = self._forward_atoms([atoms])
        return Labels(
            energy=float(output.energy[0]),
            forces=output.forces.numpy().astype(np.float64),
            atom_energy=output.atom_energy.numpy().astype(np.float64) if "atom_energy" in wanted else None,
            features={name: output.features[name].numpy() for name in self._feature_shapes if name in wanted},
        )

    def label_batch(self, atoms_list: Sequence[Atoms], properties: Sequence[str] = ("energy", "forces")) -> list[Labels]:
        """``label`` of many structures with batched model calls (the model directly, not the ASE calculator)."""
        wanted = check_properties(self.identity.name, properties, self.offered_properties)
        atoms_list = list(atoms_list)
        if not atoms_list:
            return []
        return split_output(self._forward_atoms(atoms_list), [len(a) for a in atoms_list], wanted)

    #: whether ``predict(batch, differentiable=True)`` is supported (subclasses that implement it set True)
    differentiable = False

    def predict(self, batch, differentiable: bool = False) -> ModelOutput:
        if differentiable:
            raise ConfigError(f"teacher {self.identity.name} has no differentiable predict()")
        return self._forward_atoms(batch.to_ase())

    def _forward_atoms(self, atoms_list: list[Atoms]) -> ModelOutput:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity.name})"


class capture_outputs:
    """Context manager: forward hooks that keep a detached copy of ``pick(output)`` of each named module.

    ``with capture_outputs({"node": (module, pick)}) as captured: ...`` then ``captured["node"]`` is the list of
    tensors, one per forward call of that module. The hooks are removed on exit.
    """

    def __init__(self, hooks: dict):
        self._hooks = hooks
        self._handles: list = []
        self.captured: dict[str, list] = {name: [] for name in hooks}

    def __enter__(self) -> dict[str, list]:
        for name, (module, pick) in self._hooks.items():

            def hook(_module, _inputs, output, name=name, pick=pick):
                self.captured[name].append(pick(output).detach().clone())

            self._handles.append(module.register_forward_hook(hook))
        return self.captured

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
