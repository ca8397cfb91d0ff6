"""The teacher's side of every KD loss: ``TeacherTargets``, from an online teacher or from cached dataset rows.

One code path serves an online teacher and cached teacher outputs: both become a ``TeacherTargets``
(``TeacherTargets.from_output(teacher_model_output)`` online; ``TeacherTargets.from_cached(...)`` with the tensors
``augkd label`` cached in the rows of a training batch), and the losses never know which it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from augkd.errors import ConfigError
from augkd.kd.features import missing_teacher_message, resolve_teacher_feature
from augkd.models.interface import ModelOutput
from augkd.reductions import LossBatch


def edge_to_node(edge_features: torch.Tensor, edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """H_e2n,i = Σ over edges whose target (centre, ``edge_index[1]``) is i of H_edge: (E, C) → (N, C)."""
    out = edge_features.new_zeros((num_nodes, *edge_features.shape[1:]))
    return out.index_add(0, edge_index[1].long(), edge_features)


def edge_to_vector(
    edge_features: torch.Tensor, edge_index: torch.Tensor, unit_vec: torch.Tensor, num_nodes: int
) -> torch.Tensor:
    """H_vec,i^(k) = Σ_{edges (j→i)} u_ij · H_edge^(k): (E, C) with (E, 3) unit vectors → (N, 3, C).

    ``u_ij`` follows ``augkd.models.interface``: pos[j] - pos[i] (+ shift), normalised, i = ``edge_index[1]``.
    """
    contrib = unit_vec.to(edge_features.dtype).unsqueeze(-1) * edge_features.unsqueeze(1)  # (E, 3, C)
    out = edge_features.new_zeros((num_nodes, 3, edge_features.shape[-1]))
    return out.index_add(0, edge_index[1].long(), contrib)


@dataclass
class TeacherTargets:
    """The teacher's side of every KD loss, from an online teacher or from cached dataset fields.

    Features use the names and layouts of ``augkd.models.interface.FEATURE_KINDS``. ``mask`` marks the atoms whose
    cached targets exist (rows of a batch mixing labelled and unlabelled frames): feature losses, vanilla(2) and
    vanilla(1)'s forces use only those atoms, vanilla(1)'s energy only ``system_mask`` (default: the systems with
    at least one such atom).
    """

    energy: torch.Tensor | None  # (B,) eV
    forces: torch.Tensor | None  # (N, 3) eV/Å
    atom_energy: torch.Tensor | None = None  # (N,) eV
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    edge_index: torch.Tensor | None = None  # (2, E), only with 'edge' features
    edge_unit_vec: torch.Tensor | None = None  # (E, 3), only with 'edge' features
    edge_cell_offsets: torch.Tensor | None = None  # (E, 3) integer cell shifts of the edges (online teachers)
    mask: torch.Tensor | None = None  # (N,) bool; None = every atom has its per-atom targets
    system_mask: torch.Tensor | None = None  # (B,) bool, systems with cached energy/forces; None = from ``mask``

    @classmethod
    def from_output(cls, output: ModelOutput, detach: bool = True) -> TeacherTargets:
        """From a teacher's ``ModelOutput``; derives ``edge2node``/``edge_vector`` from ``edge`` features + graph.

        ``detach=False`` keeps the graph (the adversarial attack differentiates through the teacher).
        """

        def d(t):
            return None if t is None else (t.detach() if detach else t)

        features = {k: d(v) for k, v in output.features.items()}
        edge_index = unit = offsets = None
        if "edge" in features and output.graph is not None:
            edge_index = output.graph.edge_index
            unit = d(output.graph.unit_vec)
            offsets = output.graph.cell_offsets
            num_nodes = output.forces.shape[0]
            if "edge2node" not in features:
                features["edge2node"] = edge_to_node(features["edge"], edge_index, num_nodes)
            if "edge_vector" not in features:
                features["edge_vector"] = edge_to_vector(features["edge"], edge_index, unit, num_nodes)
        return cls(
            energy=d(output.energy),
            forces=d(output.forces),
            atom_energy=d(output.atom_energy),
            features=features,
            edge_index=edge_index,
            edge_unit_vec=unit,
            edge_cell_offsets=offsets,
        )

    @classmethod
    def from_cached(cls, cached: Mapping[str, Any], rows: torch.Tensor, atoms: torch.Tensor) -> TeacherTargets:
        """From the cached teacher outputs of the rows of a batch that have them.

        ``cached``: energy (B',), forces (N', 3), optional atom_energy (N',) and features {name: (N', ...)} of those
        rows only (``augkd.train.data.collate``); ``rows`` (B,) / ``atoms`` (N,) bool mark them in the batch. The
        other rows get zeros and are masked out (``mask`` = ``atoms``); ``fill`` can label them afterwards.
        """
        n_atoms, n_rows = atoms.shape[0], rows.shape[0]
        forces = torch.zeros(n_atoms, 3, device=atoms.device)
        forces[atoms] = cached["forces"]
        energy = torch.zeros(n_rows, device=atoms.device)
        energy[rows] = cached["energy"]
        features = {}
        for name, value in cached["features"].items():
            full = torch.zeros((n_atoms, *value.shape[1:]), device=atoms.device)
            full[atoms] = value
            features[name] = full
        atom_energy = None
        if "atom_energy" in cached:
            atom_energy = torch.zeros(n_atoms, device=atoms.device)
            atom_energy[atoms] = cached["atom_energy"]
        return cls(energy=energy, forces=forces, atom_energy=atom_energy, features=features, mask=atoms)

    def fill(self, online: TeacherTargets, rows: torch.Tensor, atoms: torch.Tensor) -> TeacherTargets:
        """Fill the rows not marked by ``rows`` (B,) / ``atoms`` (N,) from ``online`` (the teacher's targets for
        those rows alone, in order), in place; every atom then has targets (``mask`` None). Returns ``self``."""
        todo = ~atoms
        self.forces[todo] = online.forces.to(self.forces.dtype)
        self.energy[~rows] = online.energy.to(self.energy.dtype)
        for name, full in self.features.items():
            full[todo] = online.features[name].to(full.dtype)
        if self.atom_energy is not None:
            self.atom_energy[todo] = online.atom_energy.to(self.atom_energy.dtype)
        self.mask = None
        return self

    def systems_with_targets(self, info: LossBatch) -> torch.Tensor | None:
        """(B,) bool: ``system_mask``, else the systems with at least one atom in ``mask`` (None = all)."""
        if self.system_mask is not None or self.mask is None:
            return self.system_mask
        counts = torch.zeros(info.num_systems, device=self.mask.device)
        return counts.index_add(0, info.batch, self.mask.float()) > 0

    def target_for(self, loss_name: str) -> torch.Tensor:
        """The teacher tensor that loss ``loss_name`` (n2n, e2n or v2v) regresses onto."""
        name = resolve_teacher_feature(loss_name, self.available())
        if name is None:
            raise ConfigError(missing_teacher_message(loss_name, "teacher", self.available()))
        if name in self.features:
            return self.features[name]
        # Derive from raw edge features on the fly (cached 'edge' rows with their graph).
        if self.edge_index is None or (name == "edge_vector" and self.edge_unit_vec is None):
            need = "edge_index" if self.edge_index is None else "edge_unit_vec"
            raise ConfigError(f"{loss_name} needs {name!r} derived from teacher 'edge' features, but {need} is missing")
        edge = self.features["edge"]
        per_atom = [t for t in (self.forces, self.atom_energy, self.mask) if t is not None]
        num_nodes = per_atom[0].shape[0] if per_atom else int(self.edge_index[1].max()) + 1
        if name == "edge2node":
            return edge_to_node(edge, self.edge_index, num_nodes)
        return edge_to_vector(edge, self.edge_index, self.edge_unit_vec, num_nodes)

    def available(self) -> list[str]:
        names = set(self.features)
        if "edge" in names and self.edge_index is not None:
            names.add("edge2node")
            if self.edge_unit_vec is not None:
                names.add("edge_vector")
        if self.atom_energy is not None:
            names.add("atom_energy")
        return sorted(names)
