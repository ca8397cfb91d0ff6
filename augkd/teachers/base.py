"""Base classes of the teachers (``augkd.teachers.interface`` is the protocol they implement), and their helpers.

- ``BaseTeacher``: what every teacher declares, with the defaults (CPU, float64, no features, no per-edge features,
  no graph cutoff said, ``label_batch`` as one ``label`` per structure).
- ``CalculatorTeacher``: one ASE calculator (EMT, any ``ase:`` class).
- ``TorchTeacherBase``: a torch model with ``predict`` on a batch; ``label_batch`` is one batched model call.
  ``ModelTeacher`` (CHGNet, SevenNet, fairchem: an external model with its own ASE calculator) and
  ``augkd.teachers.checkpoint.CheckpointTeacher`` (augkd's own models) derive from it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from augkd.errors import ConfigError
from augkd.teachers.interface import OUTPUT_PROPERTIES, GraphCutoff, Labels, TeacherIdentity, check_properties

if TYPE_CHECKING:
    from augkd.models.interface import ModelOutput


class BaseTeacher:
    """The declarations every teacher makes (``Teacher``), with their defaults; subclasses set what differs."""

    identity: TeacherIdentity
    elements: frozenset[str] | None = None
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float64
    conservative: bool | None = None
    offered_properties: tuple[str, ...] = ("energy", "forces")

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def per_edge_features(self) -> tuple[str, ...]:
        return ()

    def graph_cutoff(self) -> GraphCutoff | None:
        return None

    def label(self, atoms: Atoms, properties: Sequence[str] = ("energy", "forces")) -> Labels:
        raise NotImplementedError

    def label_batch(self, atoms_list: Sequence[Atoms], properties: Sequence[str] = ("energy", "forces")) -> list[Labels]:
        """``label`` of each structure (one structure at a time)."""
        return [self.label(atoms, properties) for atoms in atoms_list]

    def calculator(self) -> Calculator:
        raise NotImplementedError

    def _check_properties(self, properties: Sequence[str]) -> set[str]:
        """The asked properties as a set; a ConfigError for a per-edge feature or anything not offered."""
        per_edge = sorted(set((properties,) if isinstance(properties, str) else properties) & set(self.per_edge_features()))
        if per_edge:
            raise ConfigError(
                f"teacher {self.identity.name}: {', '.join(per_edge)} has one row per edge, not per atom "
                "(label its per-atom sums 'edge2node' / 'edge_vector' instead, or use the teacher online)"
            )
        return check_properties(self.identity.name, properties, self.offered_properties)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity.name})"


def _calculator_labels(atoms: Atoms, calculator: Calculator) -> Labels:
    """Energy (eV) and unconstrained forces (eV/Å) of a copy of ``atoms`` from ``calculator``."""
    atoms = atoms.copy()
    atoms.calc = calculator
    energy = float(atoms.get_potential_energy())
    forces = np.array(atoms.get_forces(apply_constraint=False), dtype=np.float64)
    return Labels(energy=energy, forces=forces)


class CalculatorTeacher(BaseTeacher):
    """A teacher backed by one ASE calculator: labels come from ``get_potential_energy``/``get_forces``."""

    def __init__(
        self,
        identity: TeacherIdentity,
        calculator: Calculator,
        elements: frozenset[str] | None,
        conservative: bool | None = None,
    ):
        self.identity = identity
        self.elements = elements
        self.conservative = conservative
        self._calculator = calculator

    def calculator(self) -> Calculator:
        return self._calculator

    def label(self, atoms: Atoms, properties: Sequence[str] = ("energy", "forces")) -> Labels:
        self._check_properties(properties)
        return _calculator_labels(atoms, self._calculator)


class TorchTeacherBase(BaseTeacher):
    """A teacher that runs a torch model and predicts on a fairchem batch (``TorchTeacher``).

    Subclasses implement ``predict`` and ``_forward_atoms(atoms_list) -> ModelOutput``; ``label_batch`` is one
    ``_forward_atoms`` over all the structures, split per structure.
    """

    #: whether ``predict(batch, differentiable=True)`` is supported (subclasses that implement it set True)
    differentiable: bool = False

    def predict(self, batch, differentiable: bool = False) -> ModelOutput:
        raise NotImplementedError

    def _forward_atoms(self, atoms_list: list[Atoms]) -> ModelOutput:
        raise NotImplementedError

    def _no_differentiable_predict(self) -> ConfigError:
        return ConfigError(f"teacher {self.identity.name} has no differentiable predict()")

    def label_batch(self, atoms_list: Sequence[Atoms], properties: Sequence[str] = ("energy", "forces")) -> list[Labels]:
        """``label`` of many structures with batched model calls (the model directly, not an ASE calculator)."""
        wanted = self._check_properties(properties)
        atoms_list = list(atoms_list)
        if not atoms_list:
            return []
        return split_output(self._forward_atoms(atoms_list), [len(a) for a in atoms_list], wanted)


class ModelTeacher(TorchTeacherBase):
    """Base of the teachers backed by an external torch model with its own ASE calculator (CHGNet, SevenNet,
    fairchem).

    ``label`` with energy and forces only goes through the ASE calculator (the path relaxations use, untouched by
    any hook); asking for ``atom_energy`` or a feature runs the model once with forward hooks that are removed
    again afterwards. ``predict(batch)`` defaults to ``_forward_atoms`` on ``batch.to_ase()``.
    """

    def __init__(
        self,
        identity: TeacherIdentity,
        calculator: Calculator,
        elements: frozenset[str] | None,
        feature_shapes: dict[str, tuple[int, ...]],
        has_atom_energy: bool = True,
        device: str | torch.device = "cpu",
        conservative: bool | None = None,
    ):
        self.identity = identity
        self.elements = elements
        self.device = torch.device(device)
        self.conservative = conservative
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
        wanted = self._check_properties(properties)
        if wanted <= {"energy", "forces"}:
            return _calculator_labels(atoms, self._calculator)
        output = self._forward_atoms([atoms])
        return Labels(
            energy=float(output.energy[0]),
            forces=output.forces.numpy().astype(np.float64),
            atom_energy=output.atom_energy.numpy().astype(np.float64) if "atom_energy" in wanted else None,
            features={name: output.features[name].numpy() for name in self._feature_shapes if name in wanted},
        )

    def predict(self, batch, differentiable: bool = False) -> ModelOutput:
        if differentiable:
            raise self._no_differentiable_predict()
        return self._forward_atoms(batch.to_ase())


class TeacherCalculator(Calculator):
    """ASE calculator over a teacher whose ``label(atoms)`` gives energy in eV and unconstrained forces in eV/Å."""

    implemented_properties: ClassVar[list[str]] = ["energy", "forces"]

    def __init__(self, teacher):
        super().__init__()
        self.teacher = teacher

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        labels = self.teacher.label(self.atoms)
        self.results = {"energy": labels.energy, "forces": labels.forces}


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
