"""A teacher from an augkd model checkpoint (spec ``ckpt:<path>``): energies, forces, per-atom energies, features."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator

from augkd.element_refs import ElementReferences, reference_output
from augkd.hashing import sha256_file
from augkd.models.checkpoint import load_model
from augkd.models.data import atoms_to_batch, cast_batch
from augkd.models.interface import ModelOutput
from augkd.teachers.base import TeacherCalculator, TorchTeacherBase
from augkd.teachers.interface import OUTPUT_PROPERTIES, GraphCutoff, Labels, TeacherIdentity


class CheckpointTeacher(TorchTeacherBase):
    """Any augkd model loaded from ``save_model``'s file, always in eval mode and never trained."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        path = Path(path)
        model, extra = load_model(path)
        #: a student trained on referenced energies predicts on its ``predict_origin``'s scale with these added
        refs = extra.get("element_refs")
        self.element_refs = None if refs is None else ElementReferences.from_extra(refs).refs(refs["predict_origin"])
        self.model = model.to(device).eval()
        self.model.requires_grad_(False)  # a teacher's weights never train; gradient forces need positions only
        self.device = torch.device(device)
        self.dtype = next(model.parameters()).dtype
        self.conservative = not model.direct_forces
        self.identity = TeacherIdentity(
            name=f"{model.name}-{path.stem}", kind="augkd", checkpoint=str(path), weights_sha256=sha256_file(path)
        )
        self.elements: frozenset[str] | None = None

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.model.feature_shapes()

    def per_edge_features(self) -> tuple[str, ...]:
        """Features with one row per graph edge: ``predict`` gives them, ``label`` (per-atom arrays) cannot."""
        return self.model.per_edge_features()

    def graph_cutoff(self) -> GraphCutoff:
        settings = self.model.settings
        return GraphCutoff(float(settings.cutoff), int(settings.max_neighbors))

    #: ``predict(batch, differentiable=True)`` gives outputs that autograd can follow back to ``batch.pos``
    differentiable = True

    def predict(self, batch, differentiable: bool = False) -> ModelOutput:
        """The model's outputs for a fairchem batch, detached (no autograd graph is kept).

        ``differentiable=True``: outputs keep their graph back to ``batch.pos`` (pass positions computed from a
        tensor that requires grad, e.g. X + δ, so that forces keep theirs too); the weights still never train.
        """
        batch = cast_batch(batch.to(self.device), self.dtype)
        if differentiable:
            return self._on_scale(self.model(batch), batch)
        with torch.no_grad():  # gradient-force models re-enable grad for -∇E themselves
            output = self._on_scale(self.model(batch), batch)
        graph = output.graph
        return ModelOutput(
            energy=output.energy.detach(),
            forces=output.forces.detach(),
            atom_energy=output.atom_energy.detach(),
            features={name: value.detach() for name, value in output.features.items()},
            graph=replace(graph, edge_vec=graph.edge_vec.detach(), edge_dist=graph.edge_dist.detach()),
        )

    def _on_scale(self, output: ModelOutput, batch) -> ModelOutput:
        return output if self.element_refs is None else reference_output(output, batch, self.element_refs, sign=1.0)

    @property
    def offered_properties(self) -> tuple[str, ...]:
        per_edge = set(self.per_edge_features())
        return (*OUTPUT_PROPERTIES, *(name for name in self.feature_shapes() if name not in per_edge))

    def label(self, atoms: Atoms, properties: Sequence[str] = ("energy", "forces")) -> Labels:
        self._check_properties(properties)
        output = self._forward_atoms([atoms])
        return Labels(
            energy=float(output.energy[0]),
            forces=output.forces.cpu().numpy().astype(np.float64),
            atom_energy=output.atom_energy.cpu().numpy().astype(np.float64) if "atom_energy" in properties else None,
            features={name: output.features[name].cpu().numpy() for name in properties if name in output.features},
        )

    def _forward_atoms(self, atoms_list: list[Atoms]) -> ModelOutput:
        return self.predict(atoms_to_batch(atoms_list, dtype=self.dtype))

    def calculator(self) -> Calculator:
        return TeacherCalculator(self)
