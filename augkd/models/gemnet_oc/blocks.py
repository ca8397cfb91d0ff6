"""GemNet-OC's building blocks: embeddings, the four kinds of interaction, atom updates and output blocks.

Naming follows the paper: atoms a, b, c, d; an edge c→a has source (neighbour) c and target (centre) a; ``m`` are
edge embeddings (E, emb_size_edge) of the main graph, ``h`` atom embeddings (N, emb_size_atom). An interaction
"into c→a" sums over the other edges meeting it at a, weighted by learned functions of the angle between them (and,
for quadruplets, of the dihedral angle).

The sums over triplets/quadruplets use GemNet's efficient bilinear form: per output edge e,
y_e = W · vec( R_e · Σ_t Y_t ⊗ x_t ), with R_e (C×L) a learned projection of e's radial basis, Y_t (L) the angular
basis of row t and x_t its input embedding; the inner sum is one padded batched matrix product.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from augkd.models.base import scatter_sum
from augkd.models.gemnet_oc.graphs import Groups, Quadruplets, Triplets
from augkd.models.gemnet_oc.layers import (
    Dense,
    ResidualLayer,
    ScaleFactor,
    residual_stack,
)

INV_SQRT_2 = 1.0 / math.sqrt(2.0)


class EdgeEmbedding(nn.Module):
    """m_ca = Dense([h_c, h_a, x_ca]): the embedding of an edge from its two atoms and an edge input."""

    def __init__(self, atom_size: int, edge_in: int, edge_out: int):
        super().__init__()
        self.dense = Dense(2 * atom_size + edge_in, edge_out)

    def forward(self, h: torch.Tensor, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.dense(torch.cat([h[edge_index[0]], h[edge_index[1]], x], dim=-1))


def efficient_bilinear(
    radial: torch.Tensor, angular_padded: torch.Tensor, inputs_padded: torch.Tensor
) -> torch.Tensor:
    """(E, C, L) radial projections, (E, L, K) angular bases, (E, K, I) inputs → (E, C·I) before the bilinear W."""
    summed = angular_padded @ inputs_padded  # (E, L, I): Σ over the K rows of each output edge
    return (radial @ summed).reshape(radial.shape[0], -1)


class TripletInteraction(nn.Module):
    """Messages from input rows (edges b→a, or atoms b expanded to edges b→a) into output edges c→a via angle ∠cab.

    ``symmetric``: the result updates both c→a and its counter-edge a→c (two up-projections); otherwise one
    output per output edge, optionally summed onto the output edges' target atoms (``aggregate_to``).
    """

    def __init__(self, size_in, size_out, trip_in, trip_out, emb_rbf, emb_cbf, symmetric: bool):
        super().__init__()
        self.dense_in = Dense(size_in, size_in)
        self.mlp_rbf = Dense(emb_rbf, size_in, activation=False)
        self.scale_rbf = ScaleFactor()
        self.down = Dense(size_in, trip_in)
        self.bilinear = Dense(trip_in * emb_cbf, trip_out, activation=False)
        self.scale_sum = ScaleFactor()
        self.up_ca = Dense(trip_out, size_out)
        self.up_ac = Dense(trip_out, size_out) if symmetric else None

    def forward(self, x, rad, cir, triplets: Triplets, swap=None, expand=None, aggregate_to=None, num_atoms=0):
        x = self.dense_in(x)
        if expand is not None:
            x = x[expand]  # atoms → their edges
        x = self.scale_rbf(x * self.mlp_rbf(rad), ref=x)
        x = self.down(x)
        rows = x[triplets.inp]
        radial, angular = cir
        y = efficient_bilinear(radial, angular, triplets.pad(rows))
        if aggregate_to is not None:
            y = scatter_sum(y, aggregate_to, num_atoms)
        y = self.scale_sum(self.bilinear(y), ref=rows)
        if self.up_ac is None:
            return self.up_ca(y)
        return (self.up_ca(y) + self.up_ac(y)[swap]) * INV_SQRT_2


class QuadrupletInteraction(nn.Module):
    """Messages from main edges d→b through quadruplet edges b→a into main edges c→a (angles ∠abd, ∠cab and the
    dihedral c-a-b-d)."""

    def __init__(self, edge_size, quad_in, quad_out, emb_rbf, emb_cbf, emb_sbf):
        super().__init__()
        self.dense_db = Dense(edge_size, edge_size)
        self.mlp_rbf = Dense(emb_rbf, edge_size, activation=False)
        self.scale_rbf = ScaleFactor()
        self.down = Dense(edge_size, quad_in)
        self.mlp_cbf = Dense(emb_cbf, quad_in, activation=False)
        self.scale_cbf = ScaleFactor()
        self.bilinear = Dense(quad_in * emb_sbf, quad_out, activation=False)
        self.scale_sum = ScaleFactor()
        self.up_ca = Dense(quad_out, edge_size)
        self.up_ac = Dense(quad_out, edge_size)

    def forward(self, m, rad, cir, sph, quadruplets: Quadruplets, swap):
        x = self.dense_db(m)
        x = self.scale_rbf(x * self.mlp_rbf(rad), ref=x)
        x = self.down(x)
        x = x[quadruplets.inner.inp]  # per triplet d→b→a
        x = self.scale_cbf(x * self.mlp_cbf(cir), ref=x)
        rows = x[quadruplets.to_inner]  # per quadruplet
        radial, angular = sph
        y = self.scale_sum(self.bilinear(efficient_bilinear(radial, angular, quadruplets.pad(rows))), ref=rows)
        return (self.up_ca(y) + self.up_ac(y)[swap]) * INV_SQRT_2


class PairInteraction(nn.Module):
    """Atom-to-atom messages on the long-range atom graph: h_a += W · vec(Σ_b R_ba ⊗ x_b)."""

    def __init__(self, atom_size, pair_in, pair_out, emb_rbf):
        super().__init__()
        self.down = Dense(atom_size, pair_in)
        self.bilinear = Dense(emb_rbf * pair_in, pair_out, activation=False)
        self.scale_sum = ScaleFactor()
        self.up = Dense(pair_out, atom_size)

    def forward(self, h, rad_padded, source, groups: Groups):
        rows = self.down(h)[source]
        y = (rad_padded @ groups.pad(rows)).reshape(h.shape[0], -1)  # (N, C·I)
        return self.up(self.scale_sum(self.bilinear(y), ref=rows))


class AtomUpdate(nn.Module):
    """Atom embedding from the incoming edge embeddings: residual MLP of Σ_c m_ca ⊙ W·rbf(d_ca)."""

    def __init__(self, atom_size, edge_size, emb_rbf, num_residual):
        super().__init__()
        self.dense_rbf = Dense(emb_rbf, edge_size, activation=False)
        self.scale_sum = ScaleFactor()
        self.mlp = residual_stack(edge_size, atom_size, num_residual)

    def forward(self, m, rad, target, num_atoms):
        x = scatter_sum(m * self.dense_rbf(rad), target, num_atoms)
        return self.mlp(self.scale_sum(x, ref=m))


class OutputBlock(nn.Module):
    """Per-block outputs: atom output x_E (from the edges into each atom, plus h) and edge output x_F."""

    def __init__(self, atom_size, edge_size, emb_rbf, num_residual, num_after_atom, direct_forces: bool):
        super().__init__()
        self.atom = AtomUpdate(atom_size, edge_size, emb_rbf, num_residual)
        self.after_atom = residual_stack(atom_size, atom_size, num_after_atom)
        self.direct_forces = direct_forces
        if direct_forces:
            self.edge_mlp = residual_stack(edge_size, edge_size, num_residual)
            self.dense_rbf_edge = Dense(emb_rbf, edge_size, activation=False)
            self.scale_edge = ScaleFactor()

    def forward(self, h, m, rad, target):
        x_e = self.atom(m, rad, target, h.shape[0])
        if len(self.after_atom):
            x_e = self.after_atom((x_e + h) * INV_SQRT_2)
        if not self.direct_forces:
            return x_e, None
        x_f = self.edge_mlp(m)
        # the radial basis carries the envelope: edge outputs (and direct forces) vanish smoothly at the cutoff
        return x_e, self.scale_edge(x_f * self.dense_rbf_edge(rad), ref=x_f)


class InteractionBlock(nn.Module):
    """One GemNet-OC interaction: edge updates from triplets, quadruplets and atoms; atom updates from edges and
    atoms; then edges again from the updated atoms."""

    def __init__(self, s, *, quad: bool, atom_edge: bool, edge_atom: bool, atom_atom: bool):
        super().__init__()
        atom, edge = s.emb_size_atom, s.emb_size_edge
        trip = (s.emb_size_trip_in, s.emb_size_trip_out, s.emb_size_rbf, s.emb_size_cbf)
        self.dense_skip = Dense(edge, edge)
        self.triplet = TripletInteraction(edge, edge, *trip, symmetric=True)
        self.quadruplet = (
            QuadrupletInteraction(edge, s.emb_size_quad_in, s.emb_size_quad_out, s.emb_size_rbf, s.emb_size_cbf,
                                  s.emb_size_sbf) if quad else None
        )
        self.atom_to_edge = TripletInteraction(atom, edge, *trip, symmetric=True) if atom_edge else None
        self.edge_to_atom = TripletInteraction(edge, atom, *trip, symmetric=False) if edge_atom else None
        self.atom_to_atom = (
            PairInteraction(atom, s.emb_size_aint_in, s.emb_size_aint_out, s.emb_size_rbf) if atom_atom else None
        )
        self.before_skip = nn.Sequential(*(ResidualLayer(edge) for _ in range(s.num_before_skip)))
        self.after_skip = nn.Sequential(*(ResidualLayer(edge) for _ in range(s.num_after_skip)))
        self.atom_layers = nn.Sequential(*(ResidualLayer(atom) for _ in range(s.num_atom_emb_layers)))
        self.atom_update = AtomUpdate(atom, edge, s.emb_size_rbf, s.num_atom)
        self.concat = EdgeEmbedding(atom, edge, edge)
        self.concat_layers = nn.Sequential(*(ResidualLayer(edge) for _ in range(s.num_concat)))
        self.edge_norm = 1.0 / math.sqrt(2 + quad + atom_edge)  # sums of unit-variance terms keep unit variance
        self.atom_norm = 1.0 / math.sqrt(1 + edge_atom + atom_atom)

    def forward(self, h, m, bases: dict, graph):
        swap, num_atoms = graph.swap, graph.num_atoms
        x = self.dense_skip(m) + self.triplet(m, bases["rad_e2e"], bases["cir_e2e"], graph.triplets, swap)
        if self.quadruplet is not None:
            x = x + self.quadruplet(m, bases["rad_qint"], bases["cir_qint"], bases["sph_qint"], graph.quadruplets, swap)
        if self.atom_to_edge is not None:
            x = x + self.atom_to_edge(
                h, bases["rad_a2e"], bases["cir_a2e"], graph.a2e, swap, expand=graph.aeaint.edge_index[0]
            )
        x = x * self.edge_norm
        h_sum = h
        if self.edge_to_atom is not None:
            h_sum = h_sum + self.edge_to_atom(
                m, bases["rad_e2a"], bases["cir_e2a"], graph.e2a, aggregate_to=graph.aeaint.edge_index[1],
                num_atoms=num_atoms,
            )
        if self.atom_to_atom is not None:
            h_sum = h_sum + self.atom_to_atom(h, bases["rad_aint"], graph.aint.edge_index[0], graph.aint_groups)
        h = h_sum * self.atom_norm

        m = self.after_skip((m + self.before_skip(x)) * INV_SQRT_2)
        h = self.atom_layers(h)
        h = (h + self.atom_update(m, bases["rad_atom"], graph.edge_index[1], num_atoms)) * INV_SQRT_2
        m = (m + self.concat_layers(self.concat(h, m, graph.edge_index))) * INV_SQRT_2
        return h, m
