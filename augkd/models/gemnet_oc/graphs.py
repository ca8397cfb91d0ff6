"""GemNet-OC's interaction graphs and the index sets of its triplets and quadruplets (pure torch, no sparse libs).

One radius graph is built with the largest cutoff and neighbour limit (fairchem's builder, as for the other augkd
models); the four graphs GemNet-OC needs are cut out of it:

- ``main``: embedding graph (``cutoff``, ``max_neighbors``), made symmetric so that every edge j→i has its
  counter-edge i→j (``swap[e]``): an edge is kept when either atom counts the other among its nearest neighbours.
  (The original kept only the edges i→j with i < j and mirrored them; that choice depends on the atom order when the
  neighbour limit is reached. The union does not.)
- ``aeaint``: atom-to-edge / edge-to-atom interactions; ``aint``: atom-to-atom; ``qint``: quadruplet interactions,
  restricted to edges that touch an atom whose tag is in ``qint_tags``. These stay directed (per-centre limits).

Neighbour limits keep ties: every neighbour within ``TIE_TOLERANCE`` of the k-th nearest distance is kept, so the
graph does not depend on atom order in symmetric crystals. Conventions are augkd's (``augkd.models.interface``):
``index[0]`` = source (neighbour) j, ``index[1]`` = target (centre) i, ``vec`` = pos[j] − pos[i] + shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from augkd.models.interface import Graph, edge_keys, offset_reach

TIE_TOLERANCE = 0.01  # Å, like fairchem's non-strict neighbour limit


def select_edges(graph: Graph, mask: torch.Tensor) -> Graph:
    return Graph(
        edge_index=graph.edge_index[:, mask],
        edge_vec=graph.edge_vec[mask],
        edge_dist=graph.edge_dist[mask],
        cell_offsets=graph.cell_offsets[mask],
    )


def pad_rows(values: torch.Tensor, group: torch.Tensor, slot: torch.Tensor, num_groups: int) -> torch.Tensor:
    """(R, ...) rows → (num_groups, K, ...): row r at [group[r], slot[r]], zeros elsewhere (K = largest slot + 1)."""
    width = int(slot.max()) + 1 if slot.numel() else 0
    padded = values.new_zeros((num_groups, width, *values.shape[1:]))
    padded[group, slot] = values
    return padded


def group_inner_index(groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Position of each row within its group, for rows already sorted by group: [0,0,1,1,1] → [0,1,0,1,2]."""
    counts = torch.bincount(groups, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(groups.shape[0], device=groups.device) - starts[groups]


def nearest_neighbour_mask(graph: Graph, cutoff: float, max_neighbors: int, num_atoms: int) -> torch.Tensor:
    """Edges within ``cutoff`` that are among the ``max_neighbors`` nearest of their centre (ties kept)."""
    dist = graph.edge_dist.detach()
    mask = dist <= cutoff
    centre = graph.edge_index[1]
    if int(mask.sum()) == 0:
        return mask
    degree = torch.bincount(centre[mask], minlength=num_atoms)
    if int(degree.max()) <= max_neighbors:
        return mask
    candidates = torch.nonzero(mask).squeeze(1)
    by_distance = candidates[torch.argsort(dist[candidates], stable=True)]
    ordered = by_distance[torch.argsort(centre[by_distance], stable=True)]  # by centre, then distance
    rank = group_inner_index(centre[ordered], num_atoms)
    kth = torch.full((num_atoms,), float("inf"), dtype=dist.dtype, device=dist.device)
    last = rank == max_neighbors - 1
    kth[centre[ordered[last]]] = dist[ordered[last]]
    return mask & (dist <= kth[centre] + TIE_TOLERANCE)


def symmetrize(graph: Graph, num_atoms: int) -> tuple[Graph, torch.Tensor]:
    """The union of ``graph`` and its counter-edges, and ``swap``: the index of each edge's counter-edge."""
    index = torch.cat([graph.edge_index, graph.edge_index.flip(0)], dim=1)
    offsets = torch.cat([graph.cell_offsets, -graph.cell_offsets])
    reach = offset_reach(offsets)
    keys = edge_keys(index, offsets, num_atoms, reach)
    unique, inverse = torch.unique(keys, return_inverse=True)
    first = torch.full((unique.shape[0],), keys.shape[0], dtype=torch.long, device=keys.device)
    first.scatter_reduce_(0, inverse, torch.arange(keys.shape[0], device=keys.device), reduce="amin")
    keep = torch.sort(first).values
    num_edges = graph.edge_index.shape[1]
    sign = torch.where(keep < num_edges, 1.0, -1.0).to(graph.edge_vec.dtype).unsqueeze(-1)
    source_row = torch.where(keep < num_edges, keep, keep - num_edges)
    symmetric = Graph(
        edge_index=index[:, keep],
        edge_vec=graph.edge_vec[source_row] * sign,
        edge_dist=graph.edge_dist[source_row],
        cell_offsets=offsets[keep],
    )
    kept_keys = keys[keep]
    order = torch.argsort(kept_keys)
    counter = edge_keys(symmetric.edge_index.flip(0), -symmetric.cell_offsets, num_atoms, reach)
    swap = order[torch.searchsorted(kept_keys[order], counter)]
    return symmetric, swap


def pairs_by_key(out_key: torch.Tensor, in_key: torch.Tensor, num_keys: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All pairs (o, i) with ``out_key[o] == in_key[i]``, ordered by o (so rows of one o are contiguous)."""
    device = out_key.device
    order_in = torch.argsort(in_key, stable=True)
    counts = torch.bincount(in_key, minlength=num_keys)
    starts = torch.cumsum(counts, 0) - counts
    per_out = counts[out_key]
    out_rows = torch.repeat_interleave(torch.arange(out_key.shape[0], device=device), per_out)
    first_of_out = torch.cumsum(per_out, 0) - per_out
    within = torch.arange(out_rows.shape[0], device=device) - first_of_out[out_rows]
    in_rows = order_in[starts[out_key][out_rows] + within]
    return out_rows, in_rows


@dataclass
class Triplets:
    """Pairs of an input edge and an output edge meeting at one atom; rows grouped by ``out`` (ascending).

    ``slot`` numbers the rows of each output edge (0, 1, ...): the column in a zero-padded (out, K, ...) layout.
    """

    inp: torch.Tensor  # (T,) input edge per row
    out: torch.Tensor  # (T,) output edge per row
    slot: torch.Tensor  # (T,)
    num_out: int

    @classmethod
    def build(cls, out_key, in_key, num_keys: int, num_out: int, keep=None) -> Triplets:
        out, inp = pairs_by_key(out_key, in_key, num_keys)
        if keep is not None:
            mask = keep(out, inp)
            out, inp = out[mask], inp[mask]
        return cls(inp=inp, out=out, slot=group_inner_index(out, num_out), num_out=num_out)

    def pad(self, values: torch.Tensor) -> torch.Tensor:
        """(T, ...) → (num_out, K, ...) with zeros where an output edge has fewer than K rows."""
        return pad_rows(values, self.out, self.slot, self.num_out)


def not_same_neighbour(out_graph: Graph, in_graph: Graph):
    """Keeps pairs of edges into one atom unless both point at the same neighbour image."""

    def keep(out, inp):
        same_atom = out_graph.edge_index[0, out] == in_graph.edge_index[0, inp]
        same_image = (out_graph.cell_offsets[out] == in_graph.cell_offsets[inp]).all(dim=-1)
        return ~(same_atom & same_image)

    return keep


@dataclass
class Quadruplets:
    """Quadruplets d→b→a←c: main edge d→b, quadruplet edge b→a, main edge c→a (d ≠ a and c ≠ b and c ≠ d).

    ``inner``: triplets (main d→b into quadruplet edge b→a); ``outer``: triplets (quadruplet edge b→a, main c→a);
    per quadruplet the indices of its inner and outer triplet; rows grouped by the main edge c→a (``out``).
    """

    inner: Triplets
    outer: Triplets
    to_inner: torch.Tensor  # (Q,)
    to_outer: torch.Tensor  # (Q,)
    out: torch.Tensor  # (Q,) main edge c→a
    slot: torch.Tensor  # (Q,)
    num_out: int

    def pad(self, values: torch.Tensor) -> torch.Tensor:
        """(Q, ...) → (num_out, K, ...), as ``Triplets.pad``."""
        return pad_rows(values, self.out, self.slot, self.num_out)

    @classmethod
    def build(cls, main: Graph, qint: Graph, num_atoms: int) -> Quadruplets:
        num_main, num_qint = main.edge_index.shape[1], qint.edge_index.shape[1]
        main_source, main_target = main.edge_index
        q_source, q_target = qint.edge_index

        def d_is_not_a(out, inp):  # d (source of d→b) at the image of a itself?
            back_home = (main.cell_offsets[inp] + qint.cell_offsets[out] == 0).all(dim=-1)
            return ~((main_source[inp] == q_target[out]) & back_home)

        inner = Triplets.build(q_source, main_target, num_atoms, num_qint, keep=d_is_not_a)
        outer = Triplets.build(main_target, q_target, num_atoms, num_main, keep=not_same_neighbour(main, qint))
        to_outer, to_inner = pairs_by_key(outer.inp, inner.out, num_qint)
        out = outer.out[to_outer]
        d_edge = inner.inp[to_inner]
        c_at_d = (main.cell_offsets[out] == main.cell_offsets[d_edge] + qint.cell_offsets[outer.inp[to_outer]]).all(-1)
        keep = ~((main_source[out] == main_source[d_edge]) & c_at_d)
        to_outer, to_inner, out = to_outer[keep], to_inner[keep], out[keep]
        return cls(
            inner=inner, outer=outer, to_inner=to_inner, to_outer=to_outer, out=out,
            slot=group_inner_index(out, num_main), num_out=num_main,
        )


@dataclass
class Groups:
    """Rows (e.g. edges) grouped by an unsorted key (e.g. their centre atom), for a zero-padded (groups, K, ...)
    layout in which a sum over each group becomes one batched matrix product."""

    group: torch.Tensor  # (R,)
    slot: torch.Tensor  # (R,)
    num_groups: int

    @classmethod
    def build(cls, group: torch.Tensor, num_groups: int) -> Groups:
        order = torch.argsort(group, stable=True)
        slot = torch.empty_like(group)
        slot[order] = group_inner_index(group[order], num_groups)
        return cls(group=group, slot=slot, num_groups=num_groups)

    def pad(self, values: torch.Tensor) -> torch.Tensor:
        return pad_rows(values, self.group, self.slot, self.num_groups)


@dataclass
class GemNetGraph(Graph):
    """The main (symmetric) graph, as every augkd model returns it, plus GemNet-OC's other graphs and indices."""

    swap: torch.Tensor | None = None  # (E,) counter-edge of each main edge
    aeaint: Graph | None = None
    aint: Graph | None = None
    qint: Graph | None = None
    triplets: Triplets | None = None  # main b→a into main c→a
    a2e: Triplets | None = None  # aeaint b→a into main c→a
    e2a: Triplets | None = None  # main b→a into aeaint c→a
    quadruplets: Quadruplets | None = None
    aint_groups: Groups | None = None  # atom-interaction edges grouped by centre atom
    num_atoms: int = 0

