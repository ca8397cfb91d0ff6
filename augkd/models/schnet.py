"""SchNet (Schütt et al. 2017/2018): continuous-filter convolutions over a radius graph; forces = -∇E.

h_i ← h_i + MLP(Σ_j (W_in h_j) ⊙ filter(|r_ij|)), with the filter an MLP of Gaussian distance features times a
cosine cutoff; per-atom energies from an MLP on the final h. ``node`` features are h after the interaction block
chosen by ``feature_layer`` ("I<k>", default the last), i.e. before the output MLP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple  # TorchScript reads typing's generics in signatures

import torch
from torch import nn

from augkd.models.base import (
    AtomisticModel,
    AtomwiseOutput,
    parse_feature_layer,
    scatter_sum,
)
from augkd.models.interface import Graph
from augkd.models.radial import CosineCutoff, GaussianRBF, ShiftedSoftplus

MAX_ATOMIC_NUMBER = 118


@dataclass
class SchNetSettings:
    """Defaults: the paper's OC20 configuration."""

    hidden_channels: int = 1024
    num_filters: int = 256
    num_interactions: int = 5
    num_gaussians: int = 200
    cutoff: float = 6.0  # Å
    max_neighbors: int = 50
    # Aggregated messages are divided by √avg_num_neighbors so activations stay O(1) whatever the density.
    avg_num_neighbors: float = 50.0
    feature_layer: str | None = None  # "I<k>": h after interaction block k; None: the last


class Interaction(nn.Module):
    """One continuous-filter convolution and its atom-wise update."""

    def __init__(self, hidden: int, filters: int, num_gaussians: int, cutoff: float, message_norm: float):
        super().__init__()
        self.filter_net = nn.Sequential(
            nn.Linear(num_gaussians, filters), ShiftedSoftplus(), nn.Linear(filters, filters)
        )
        self.cutoff_fn = CosineCutoff(cutoff)
        self.to_filters = nn.Linear(hidden, filters, bias=False)
        self.update = nn.Sequential(nn.Linear(filters, hidden), ShiftedSoftplus(), nn.Linear(hidden, hidden))
        self.message_norm = message_norm

    def forward(
        self, h: torch.Tensor, rbf: torch.Tensor, edge_dist: torch.Tensor, source: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        weights = self.filter_net(rbf) * self.cutoff_fn(edge_dist).unsqueeze(-1)
        messages = self.to_filters(h)[source] * weights
        return h + self.update(scatter_sum(messages, target, h.shape[0]) * self.message_norm)


class SchNet(AtomisticModel):
    name = "schnet"
    direct_forces = False
    edge_list = True

    def __init__(self, settings: SchNetSettings | None = None):
        settings = settings or SchNetSettings()
        super().__init__(settings)
        hidden = settings.hidden_channels
        _, self.feature_block = parse_feature_layer(
            settings.feature_layer, "I", settings.num_interactions, default=f"I{settings.num_interactions}"
        )
        self.embedding = nn.Embedding(MAX_ATOMIC_NUMBER + 1, hidden)
        self.rbf = GaussianRBF(settings.num_gaussians, settings.cutoff)
        message_norm = 1.0 / math.sqrt(settings.avg_num_neighbors)
        self.interactions = nn.ModuleList(
            Interaction(hidden, settings.num_filters, settings.num_gaussians, settings.cutoff, message_norm)
            for _ in range(settings.num_interactions)
        )
        self.output = nn.Sequential(nn.Linear(hidden, hidden // 2), ShiftedSoftplus(), nn.Linear(hidden // 2, 1))

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"node": (self.settings.hidden_channels,)}

    def body(self, atomic_numbers: torch.Tensor, graph: Graph) -> AtomwiseOutput:
        energy, forces, features = self.atomwise(atomic_numbers, graph.edge_index, graph.edge_vec, graph.edge_dist)
        return AtomwiseOutput(atom_energy=energy, forces=forces, features=features)

    def atomwise(
        self, atomic_numbers: torch.Tensor, edge_index: torch.Tensor, edge_vec: torch.Tensor, edge_dist: torch.Tensor
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Dict[str, torch.Tensor]]:
        source, target = edge_index[0], edge_index[1]
        h = self.embedding(atomic_numbers)
        rbf = self.rbf(edge_dist)
        features: Dict[str, torch.Tensor] = {}
        block = 0
        for interaction in self.interactions:
            block += 1
            h = interaction(h, rbf, edge_dist, source, target)
            if block == self.feature_block:
                features["node"] = h
        forces: Optional[torch.Tensor] = None
        return self.output(h).squeeze(-1), forces, features
