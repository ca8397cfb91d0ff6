"""The contract between models, teachers, KD losses and the trainer.

Every augkd model is an ``nn.Module`` whose ``forward(batch)`` takes a fairchem ``AtomicData`` batch and returns a
``ModelOutput``; KD code only ever looks at ``ModelOutput`` (never into a model's internals).

Graph convention (fairchem's): ``edge_index[0]`` = source j (the neighbour), ``edge_index[1]`` = target i (the
centre atom); ``edge_vec = pos[j] - pos[i] + shift`` (Å), so ``u_ij = edge_vec / |edge_vec|`` points from the
centre to its neighbour. Messages flow j → i and are summed onto i = ``edge_index[1]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

#: Feature names and their per-item layout (see shared spec, algorithms.md "Features each model exposes").
#: node: (N, C) scalars; vector: (N, 3, C) equivariant vectors; edge: (E, C) per edge of ``ModelOutput.graph``;
#: edge2node: (N, C) = sum of edge features onto their centre atom; edge_vector: (N, 3, C) = sum_j u_ij ⊗ edge_ij.
FEATURE_KINDS = ("node", "vector", "edge", "edge2node", "edge_vector")


@dataclass
class Graph:
    edge_index: torch.Tensor  # (2, E) long: [source j, target i]
    edge_vec: torch.Tensor  # (E, 3) Å, pos[j] - pos[i] + shift; differentiable w.r.t. positions
    edge_dist: torch.Tensor  # (E,) Å
    cell_offsets: torch.Tensor  # (E, 3) integer shifts (as float)

    @property
    def unit_vec(self) -> torch.Tensor:
        return self.edge_vec / self.edge_dist.clamp_min(1e-9).unsqueeze(-1)


@dataclass
class ModelOutput:
    energy: torch.Tensor  # (B,) eV, total energy per system
    forces: torch.Tensor  # (N, 3) eV/Å
    atom_energy: torch.Tensor  # (N,) eV, per-atom contributions summing to energy
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # names from FEATURE_KINDS (+ model-specific)
    graph: Graph | None = None  # the graph the model used (needed for edge features)


def build_graph(batch, cutoff: float, max_neighbors: int) -> Graph:
    """Radius graph with periodic images (fairchem's pure-torch builder), differentiable w.r.t. ``batch.pos``.

    ``batch.pos`` must already require grad when forces are taken as -dE/dpos.
    """
    from fairchem.core.graph.compute import generate_graph

    graph = generate_graph(
        batch,
        cutoff=cutoff,
        max_neighbors=max_neighbors,
        enforce_max_neighbors_strictly=False,
        radius_pbc_version=2,  # version 1 refuses batches that mix pbc settings
        pbc=batch.pbc,
    )
    return Graph(
        edge_index=graph["edge_index"],
        edge_vec=graph["edge_distance_vec"],
        edge_dist=graph["edge_distance"],
        cell_offsets=graph["cell_offsets"].to(batch.pos.dtype),
    )


def edge_keys(index: torch.Tensor, offsets: torch.Tensor, num_atoms: int, reach: int) -> torch.Tensor:
    """One int64 per directed edge (source, target, integer cell offset); ``reach`` bounds |offset| components."""
    base = 2 * reach + 1
    shifted = offsets.round().long() + reach
    key = index[0].long() * num_atoms + index[1].long()
    for axis in range(3):
        key = key * base + shifted[:, axis]
    return key


def offset_reach(*offsets: torch.Tensor) -> int:
    values = [int(o.detach().abs().max()) for o in offsets if o.numel()]
    return max(values, default=0) + 1


def match_edges(
    index_a: torch.Tensor, offsets_a: torch.Tensor, index_b: torch.Tensor, offsets_b: torch.Tensor, num_atoms: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (ia, ib) of the edges present in both edge lists (same source, target and cell offset)."""
    reach = offset_reach(offsets_a, offsets_b)
    keys_a = edge_keys(index_a, offsets_a, num_atoms, reach)
    keys_b = edge_keys(index_b, offsets_b, num_atoms, reach)
    order = torch.argsort(keys_b)
    sorted_b = keys_b[order]
    position = torch.searchsorted(sorted_b, keys_a).clamp_max(max(sorted_b.shape[0] - 1, 0))
    found = sorted_b[position] == keys_a if sorted_b.numel() else torch.zeros_like(keys_a, dtype=torch.bool)
    return torch.nonzero(found).squeeze(1), order[position[found]]
