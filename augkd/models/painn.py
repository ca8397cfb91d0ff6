"""PaiNN (Schütt, Unke, Gastegger 2021): scalar s (N, C) and equivariant vector v (N, 3, C) features.

Each layer is a message block (M) then an update block (U):
- M: from neighbour j to centre i, φ(s_j) ⊙ W(|r_ij|) f_c(|r_ij|) is split into (a, b, c):
  Δs_i = Σ_j a,  Δv_i = Σ_j b ⊙ v_j + c ⊙ u_ij   (u_ij = r_ij/|r_ij|, pointing from i to j).
  W is a linear map of the radial basis (with a bias); the cosine cutoff f_c multiplies its output (schnetpack's
  form), so a message vanishes as its neighbour reaches r_c and the energy is continuous there (needed for MD).
- U: with U v, V v channel mixes (no bias, so they commute with rotations) and (a_vv, a_sv, a_ss) = MLP(s, |V v|):
  Δv = a_vv ⊙ U v,  Δs = a_ss + a_sv ⊙ ⟨U v, V v⟩.
Energies: an MLP on s per atom. Direct forces (``direct_forces``, the paper's OC20 setting): two gated equivariant
blocks reduce v to one vector per atom; otherwise forces = -∇E.
Features ``node``/``vector`` = s/v after the block named by ``feature_layer`` ("U<k>" or "M<k>"; default the last U).
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
from augkd.models.radial import CosineCutoff, SineRBF

MAX_ATOMIC_NUMBER = 118
# Added under the square root of |v|²: the norm's gradient is finite at v = 0 (an atom with no neighbours).
NORM_EPS = 1e-8


@dataclass
class PaiNNSettings:
    """Defaults: the paper's OC20 "PaiNN-big"."""

    hidden_channels: int = 512
    num_layers: int = 6
    num_rbf: int = 128
    cutoff: float = 12.0  # Å
    max_neighbors: int = 50
    direct_forces: bool = True
    # Aggregated messages are divided by √avg_num_neighbors so activations stay O(1) whatever the density.
    avg_num_neighbors: float = 50.0
    feature_layer: str | None = None  # "U<k>" / "M<k>": after update/message block k; None: the last U


def vector_norm(v: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """|v| over the xyz axis of (N, 3, C) → (N, C)."""
    return torch.sqrt((v * v).sum(dim=1) + eps)


class Message(nn.Module):
    def __init__(self, channels: int, num_rbf: int, message_norm: float):
        super().__init__()
        self.channels = channels
        self.scalar_net = nn.Sequential(nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, 3 * channels))
        self.filter = nn.Linear(num_rbf, 3 * channels)
        self.message_norm = message_norm

    def forward(
        self,
        s: torch.Tensor,
        v: torch.Tensor,
        edge_basis: torch.Tensor,
        edge_cutoff: torch.Tensor,
        unit_vec: torch.Tensor,
        source: torch.Tensor,
        target: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.scalar_net(s)[source] * (self.filter(edge_basis) * edge_cutoff.unsqueeze(-1))
        ds, dv_v, dv_u = torch.split(x, self.channels, dim=-1)
        dv = dv_v.unsqueeze(1) * v[source] + dv_u.unsqueeze(1) * unit_vec.unsqueeze(-1)
        n = s.shape[0]
        return (
            s + scatter_sum(ds, target, n) * self.message_norm,
            v + scatter_sum(dv, target, n) * self.message_norm,
        )


class Update(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.mix_u = nn.Linear(channels, channels, bias=False)
        self.mix_v = nn.Linear(channels, channels, bias=False)
        self.scalar_net = nn.Sequential(
            nn.Linear(2 * channels, channels), nn.SiLU(), nn.Linear(channels, 3 * channels)
        )

    def forward(self, s: torch.Tensor, v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        uv, vv = self.mix_u(v), self.mix_v(v)
        a_vv, a_sv, a_ss = torch.split(self.scalar_net(torch.cat([s, vector_norm(vv)], dim=-1)), self.channels, -1)
        return s + a_ss + a_sv * (uv * vv).sum(dim=1), v + a_vv.unsqueeze(1) * uv


class GatedEquivariantBlock(nn.Module):
    """(s, v) → (s', v'): v' = gate(s, |W₂v|) ⊙ W₁v, s' = MLP(s, |W₂v|) (Schütt et al. 2021, Fig. 3)."""

    def __init__(self, in_channels: int, out_channels: int, scalar_activation: bool):
        super().__init__()
        self.out_channels = out_channels
        self.mix_out = nn.Linear(in_channels, out_channels, bias=False)
        self.mix_norm = nn.Linear(in_channels, out_channels, bias=False)
        self.scalar_net = nn.Sequential(
            nn.Linear(in_channels + out_channels, in_channels), nn.SiLU(), nn.Linear(in_channels, 2 * out_channels)
        )
        self.scalar_activation = nn.SiLU() if scalar_activation else nn.Identity()

    def forward(self, s: torch.Tensor, v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        context = torch.cat([s, vector_norm(self.mix_norm(v))], dim=-1)
        s_out, gate = torch.split(self.scalar_net(context), self.out_channels, dim=-1)
        return self.scalar_activation(s_out), gate.unsqueeze(1) * self.mix_out(v)


class PaiNN(AtomisticModel):
    name = "painn"
    edge_list = True

    def __init__(self, settings: PaiNNSettings | None = None):
        settings = settings or PaiNNSettings()
        super().__init__(settings)
        channels = settings.hidden_channels
        self.direct_forces = settings.direct_forces
        self.feature_kind, self.feature_block = parse_feature_layer(
            settings.feature_layer, "UM", settings.num_layers, default=f"U{settings.num_layers}"
        )
        self.embedding = nn.Embedding(MAX_ATOMIC_NUMBER + 1, channels)
        self.rbf = SineRBF(settings.num_rbf, settings.cutoff)
        self.cutoff_fn = CosineCutoff(settings.cutoff)
        message_norm = 1.0 / math.sqrt(settings.avg_num_neighbors)
        self.messages = nn.ModuleList(
            Message(channels, settings.num_rbf, message_norm) for _ in range(settings.num_layers)
        )
        self.updates = nn.ModuleList(Update(channels) for _ in range(settings.num_layers))
        self.energy_head = nn.Sequential(nn.Linear(channels, channels // 2), nn.SiLU(), nn.Linear(channels // 2, 1))
        self.force_head = (
            nn.ModuleList(
                [
                    GatedEquivariantBlock(channels, channels // 2, scalar_activation=True),
                    GatedEquivariantBlock(channels // 2, 1, scalar_activation=False),
                ]
            )
            if settings.direct_forces
            else None
        )

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        channels = self.settings.hidden_channels
        return {"node": (channels,), "vector": (3, channels)}

    def body(self, atomic_numbers: torch.Tensor, graph: Graph) -> AtomwiseOutput:
        energy, forces, features = self.atomwise(atomic_numbers, graph.edge_index, graph.edge_vec, graph.edge_dist)
        return AtomwiseOutput(atom_energy=energy, forces=forces, features=features)

    def atomwise(
        self, atomic_numbers: torch.Tensor, edge_index: torch.Tensor, edge_vec: torch.Tensor, edge_dist: torch.Tensor
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Dict[str, torch.Tensor]]:
        source, target = edge_index[0], edge_index[1]
        unit_vec = edge_vec / edge_dist.clamp_min(1e-9).unsqueeze(-1)  # as Graph.unit_vec
        s = self.embedding(atomic_numbers)
        v = s.new_zeros((s.shape[0], 3, s.shape[1]))
        edge_basis = self.rbf(edge_dist)
        edge_cutoff = self.cutoff_fn(edge_dist)
        features: Dict[str, torch.Tensor] = {}
        block = 0
        for message, update in zip(self.messages, self.updates):
            block += 1
            s, v = message(s, v, edge_basis, edge_cutoff, unit_vec, source, target)
            if self.feature_kind == "M" and self.feature_block == block:
                features = {"node": s, "vector": v}
            s, v = update(s, v)
            if self.feature_kind == "U" and self.feature_block == block:
                features = {"node": s, "vector": v}
        forces: Optional[torch.Tensor] = None
        if self.force_head is not None:
            fs, fv = s, v
            for gated in self.force_head:
                fs, fv = gated(fs, fv)
            forces = fv.squeeze(-1)
        return self.energy_head(s).squeeze(-1), forces, features
