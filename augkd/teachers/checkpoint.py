"""A teacher from an augkd model checkpoint (spec ``ckpt:<path>``): energies, forces, per-atom energies, features."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from augkd.errors import ConfigError
from augkd.models.checkpoint import load_model
from augkd.models.data import atoms_to_batch, cast_batch
from augkd.models.interface import ModelOutput
from augkd.teachers.interface import Labels, TeacherIdentity, check_properties, sha256_file, split_output

OUTPUT_PROPERTIES = ("energy", "forces", "atom_energy")


class CheckpointTeacher:
    """Any augkd model loaded from ``save_model``'s file, always in eval mode and never trained."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        path = Path(path)
        model, _ = load_model(path)
        self.model = model.to(device).eval()
        self.model.requires_grad_(False)  # a teacher's weights never train; gradient forces need positions only
        self.device = torch.device(device)
        self.dtype = next(model.parameters()).dtype
        self.identity = TeacherIdentity(
            name=f"{model.name}-{path.stem}", kind="augkd", checkpoint=str(path), weights_sha256=sha256_file(path)
        )
        self.elements: frozenset[str] | None = None

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.model.feature_shapes()

    def per_edge_features(self) -> tuple[str, ...]:
        """Features with one row per graph edge: ``predict`` gives them, ``label`` (per-atom arrays) cannot."""
        return self.model.per_edge_features()

    #: ``predict(batch, differentiable=True)`` gives outputs that autograd can follow back to ``batch.pos``
    differentiable = True

    def predict(self, batch, differentiable: bool = False) -> ModelOutput:
        """The model's outputs for a fairchem batch, detached (no autograd graph is kept).

        ``differentiable=True``: outputs keep their graph back to ``batch.pos`` (pass positions computed from a
        tensor that requires grad, e.g. X + δ, so that forces keep theirs too); the weights still never train.
        """
        batch = cast_batch(batch.to(self.device), self.dtype)
        if differentiable:
            return self.model(batch)
        with torch.no_grad():  # gradient-force models re-enable grad for -∇E themselves
            output = self.model(batch)
        graph = output.graph
        return ModelOutput(
            energy=output.energy.detach(),
            forces=output.forces.detach(),
            atom_energy=output.atom_energy.detach(),
            features={name: value.detach() for name, value in output.features.items()},
            graph=replace(graph, edge_vec=graph.edge_vec.detach(), edge_dist=graph.edge_dist.detach()),
        )

    @property
    def offered_properties(self) -> tuple[str, ...]:
        per_edge = set(self.per_edge_features())
        return (*OUTPUT_PROPERTIES, *(name for name in self.feature_shapes() if name not in per_edge))

    def _check_properties(self, properties: Sequence[str]) -> None:
        per_edge = sorted(set(properties) & set(self.per_edge_features()))
        if per_edge:
            raise ConfigError(
                f"teacher {self.identity.name}: {', '.join(per_edge)} has one row per edge, not per atom "
                "(label its per-atom sums 'edge2node' / 'edge_vector' instead, or use the teacher online)"
            )
        check_properties(self.identity.name, properties, self.offered_properties)

    def label(self, atoms: Atoms, properties: Sequence[str] = ("energy", "forces")) -> Labels:
        self._check_properties(properties)
        output = self.predict(atoms_to_batch([atoms], dtype=self.dtype))
        return Labels(
            energy=float(output.energy[0]),
            forces=output.forces.cpu().numpy().astype(np.float64),
            atom_energy=output.atom_energy.cpu().numpy().astype(np.float64) if "atom_energy" in properties else None,
            features={name: output.features[name].cpu().numpy() for name in properties if name in output.features},
        )

    def label_batch(self, atoms_list: Sequence[Atoms], properties: Sequence[str] = ("energy", "forces")) -> list[Labels]:
        """``label`` of many structures with one batched forward pass."""
        self._check_properties(properties)
        atoms_list = list(atoms_list)
        if not atoms_list:
            return []
        output = self.predict(atoms_to_batch(atoms_list, dtype=self.dtype))
        return split_output(output, [len(a) for a in atoms_list], set(properties))

    def calculator(self) -> Calculator:
        return TeacherCalculator(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity.name})"


class TeacherCalculator(Calculator):
    """ASE calculator over a ``CheckpointTeacher`` (or any teacher whose ``label(atoms)`` gives energy in eV and
    unconstrained forces in eV/Å)."""

    implemented_properties: ClassVar[list[str]] = ["energy", "forces"]

    def __init__(self, teacher: CheckpointTeacher):
        super().__init__()
        self.teacher = teacher

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        labels = self.teacher.label(self.atoms)
        self.results = {"energy": labels.energy, "forces": labels.forces}
