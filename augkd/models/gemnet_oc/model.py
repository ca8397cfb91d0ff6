"""GemNet-OC (Gasteiger et al., "GemNet-OC: Developing Graph Neural Networks for Large and Diverse Molecular
Simulation Datasets", TMLR 2022) as an augkd ``AtomisticModel``.

Atom embeddings h and main-graph edge embeddings m go through ``num_blocks`` interaction blocks (triplet and
quadruplet edge interactions, atom-to-edge, edge-to-atom and atom-to-atom interactions on their own graphs, see
``graphs``); an output block after the embedding and after every interaction block gives atom outputs x_E^(k) and
edge outputs x_F^(k). CONCAT+MLP: x_E = MLP([x_E^(0) … x_E^(K)]) per atom, x_F = MLP([x_F^(0) … x_F^(K)]) per
edge. Per-atom energy = w·x_E; direct forces F_a = Σ_{c→a} (w'·x_F,ca) u_ac (u_ac: unit vector from a to c).

Scale factors inside the blocks are fitted on data: ``fit_scale_factors(model, batch)`` (the trainer does it on
its first batch for a fresh run); they are buffers, saved in every checkpoint.

Features: ``node`` = x_E (N, emb_size_atom), ``edge`` = x_F (E, emb_size_edge) on the main graph (``ModelOutput
.graph``), ``edge2node`` = Σ_{c→a} x_F,ca onto a, ``edge_vector`` = Σ_{c→a} u_ac ⊗ x_F,ca (N, 3, emb_size_edge),
and for ablations ``h<k>``/``m<k>`` (atom/edge embeddings after interaction block k = 1..K) and ``x<k>`` (atom
output of output block k = 0..K). ``feature_layer`` "H<k>" / "X<k>" makes ``node``/``edge`` the h/m after block k or
the output block k's x_E/x_F instead of CONCAT+MLP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from augkd.errors import ConfigError
from augkd.models.base import (
    AtomisticModel,
    AtomwiseOutput,
    parse_feature_layer,
    scatter_sum,
)
from augkd.models.gemnet_oc.basis import (
    BasisEmbedding,
    RadialBasis,
    circular_basis,
    cosine_between,
    dihedral_cosine,
    spherical_basis,
)
from augkd.models.gemnet_oc.blocks import EdgeEmbedding, InteractionBlock, OutputBlock
from augkd.models.gemnet_oc.graphs import (
    GemNetGraph,
    Groups,
    Quadruplets,
    Triplets,
    nearest_neighbour_mask,
    not_same_neighbour,
    select_edges,
    symmetrize,
)
from augkd.models.gemnet_oc.layers import (
    Dense,
    ResidualLayer,
    ScaleFactor,
    fit_scale_factors,
)
from augkd.models.interface import Graph, build_graph

MAX_ATOMIC_NUMBER = 118


@dataclass
class GemNetOCSettings:
    """Defaults: the paper's OC20 GemNet-OC (Tables 5–8; fairchem's gemnet_oc OC20 configuration)."""

    num_blocks: int = 4
    emb_size_atom: int = 256
    emb_size_edge: int = 512
    emb_size_trip_in: int = 64
    emb_size_trip_out: int = 64
    emb_size_quad_in: int = 32
    emb_size_quad_out: int = 32
    emb_size_aint_in: int = 64
    emb_size_aint_out: int = 64
    emb_size_rbf: int = 16
    emb_size_cbf: int = 16
    emb_size_sbf: int = 32
    num_spherical: int = 7
    num_radial: int = 128
    num_before_skip: int = 2
    num_after_skip: int = 2
    num_concat: int = 1
    num_atom: int = 3
    num_output_afteratom: int = 3
    num_atom_emb_layers: int = 2
    num_global_out_layers: int = 2
    cutoff: float = 12.0  # Å, main (embedding) graph
    cutoff_qint: float = 12.0
    cutoff_aeaint: float = 12.0
    cutoff_aint: float = 12.0
    max_neighbors: int = 30
    max_neighbors_qint: int = 8
    max_neighbors_aeaint: int = 20
    max_neighbors_aint: int = 1000
    envelope_exponent: int = 5
    quad_interaction: bool = True
    atom_edge_interaction: bool = True
    edge_atom_interaction: bool = True
    atom_interaction: bool = True
    qint_tags: list[int] = field(default_factory=lambda: [1, 2])  # quadruplets only around surface/adsorbate atoms
    direct_forces: bool = True
    feature_layer: str | None = None  # None: CONCAT+MLP; "H<k>": h/m after block k; "X<k>": output block k


class GemNetOC(AtomisticModel):
    name = "gemnet-oc"

    def __init__(self, settings: GemNetOCSettings | None = None):
        settings = settings or GemNetOCSettings()
        super().__init__(settings)
        s = settings
        for option in ("cutoff", "cutoff_qint", "cutoff_aeaint", "cutoff_aint"):
            if not getattr(s, option) > 0:
                raise ConfigError(f"{option} must be > 0, got {getattr(s, option)}")
        for option in ("max_neighbors", "max_neighbors_qint", "max_neighbors_aeaint", "max_neighbors_aint"):
            if not getattr(s, option) >= 1:
                raise ConfigError(f"{option} must be ≥ 1, got {getattr(s, option)}")
        self.direct_forces = s.direct_forces
        self.feature_kind, self.feature_block = (None, None)
        if s.feature_layer is not None:
            self.feature_kind, self.feature_block = parse_feature_layer(s.feature_layer, "HX", s.num_blocks, "H1")
        self.register_buffer("qint_tags", torch.tensor(list(s.qint_tags), dtype=torch.long), persistent=False)

        atom, edge, radial, spherical = s.emb_size_atom, s.emb_size_edge, s.num_radial, s.num_spherical
        self.radial_main = RadialBasis(radial, s.cutoff, s.envelope_exponent)
        self.radial_qint = RadialBasis(radial, s.cutoff_qint, s.envelope_exponent)
        self.radial_aeaint = RadialBasis(radial, s.cutoff_aeaint, s.envelope_exponent)
        self.radial_aint = RadialBasis(radial, s.cutoff_aint, s.envelope_exponent)

        # projections of the bases, shared by all interaction blocks (computed once per forward)
        def rbf():
            return Dense(radial, s.emb_size_rbf, activation=False)

        self.rbf_e2e, self.cbf_e2e = rbf(), BasisEmbedding(radial, s.emb_size_cbf, spherical)
        if s.quad_interaction:
            self.rbf_qint = rbf()
            self.cbf_qint = BasisEmbedding(radial, s.emb_size_cbf, spherical)
            self.sbf_qint = BasisEmbedding(radial, s.emb_size_sbf, spherical**2)
        if s.atom_edge_interaction:
            self.rbf_a2e, self.cbf_a2e = rbf(), BasisEmbedding(radial, s.emb_size_cbf, spherical)
        if s.edge_atom_interaction:
            self.rbf_e2a, self.cbf_e2a = rbf(), BasisEmbedding(radial, s.emb_size_cbf, spherical)
        if s.atom_interaction:
            self.rbf_aint = BasisEmbedding(radial, s.emb_size_rbf)
        self.rbf_atom, self.rbf_out = rbf(), rbf()

        self.atom_embedding = nn.Embedding(MAX_ATOMIC_NUMBER + 1, atom)
        nn.init.uniform_(self.atom_embedding.weight, -(3**0.5), 3**0.5)  # unit variance
        self.edge_embedding = EdgeEmbedding(atom, radial, edge)
        self.interactions = nn.ModuleList(
            InteractionBlock(s, quad=s.quad_interaction, atom_edge=s.atom_edge_interaction,
                             edge_atom=s.edge_atom_interaction, atom_atom=s.atom_interaction)
            for _ in range(s.num_blocks)
        )
        self.outputs = nn.ModuleList(
            OutputBlock(atom, edge, s.emb_size_rbf, s.num_atom, s.num_output_afteratom, s.direct_forces)
            for _ in range(s.num_blocks + 1)
        )
        concat = s.num_blocks + 1
        global_layers = range(s.num_global_out_layers)
        self.atom_mlp = nn.Sequential(Dense(atom * concat, atom), *(ResidualLayer(atom) for _ in global_layers))
        self.energy_out = Dense(atom, 1, activation=False)
        if s.direct_forces:
            self.edge_mlp = nn.Sequential(Dense(edge * concat, edge), *(ResidualLayer(edge) for _ in global_layers))
            self.force_out = Dense(edge, 1, activation=False)

    # -- data-fitted constants ---------------------------------------------------------------------------------
    @property
    def needs_data_fit(self) -> bool:
        return any(isinstance(m, ScaleFactor) and not bool(m.fitted) for m in self.modules())

    def fit_to_data(self, batch) -> list[str]:
        """Fit the scale factors on ``batch`` (see ``fit_scale_factors``); names of those left unfitted."""
        return fit_scale_factors(self, batch)

    # -- features ----------------------------------------------------------------------------------------------
    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        s = self.settings
        atom, edge = (s.emb_size_atom,), (s.emb_size_edge,)
        shapes = {"node": atom}
        if s.direct_forces or self.feature_kind == "H":
            shapes.update(edge=edge, edge2node=edge, edge_vector=(3, *edge))
        for k in range(1, s.num_blocks + 1):
            shapes.update({f"h{k}": atom, f"m{k}": edge})
        shapes.update({f"x{k}": atom for k in range(s.num_blocks + 1)})
        return shapes

    def per_edge_features(self) -> tuple[str, ...]:
        return tuple(name for name in self.feature_shapes() if name == "edge" or name.startswith("m"))

    # -- graphs ------------------------------------------------------------------------------------------------
    def make_graph(self, batch) -> GemNetGraph:
        s = self.settings
        num_atoms = int(batch.pos.shape[0])
        base = build_graph(
            batch,
            max(s.cutoff, s.cutoff_qint, s.cutoff_aeaint, s.cutoff_aint),
            max(s.max_neighbors, s.max_neighbors_qint, s.max_neighbors_aeaint, s.max_neighbors_aint),
        )

        def subgraph(cutoff, max_neighbors) -> Graph:
            return select_edges(base, nearest_neighbour_mask(base, cutoff, max_neighbors, num_atoms))

        main, swap = symmetrize(subgraph(s.cutoff, s.max_neighbors), num_atoms)
        source, target = main.edge_index
        num_main = source.shape[0]
        extra = {}
        extra["triplets"] = Triplets.build(target, target, num_atoms, num_main, keep=lambda out, inp: out != inp)
        if s.quad_interaction:
            qint = subgraph(s.cutoff_qint, s.max_neighbors_qint)
            tagged = torch.isin(batch.tags.long(), self.qint_tags)
            qint = select_edges(qint, tagged[qint.edge_index[0]] | tagged[qint.edge_index[1]])
            extra.update(qint=qint, quadruplets=Quadruplets.build(main, qint, num_atoms))
        if s.atom_edge_interaction or s.edge_atom_interaction:
            aeaint = subgraph(s.cutoff_aeaint, s.max_neighbors_aeaint)
            extra["aeaint"] = aeaint
            ae_target = aeaint.edge_index[1]
            if s.atom_edge_interaction:
                extra["a2e"] = Triplets.build(
                    target, ae_target, num_atoms, num_main, keep=not_same_neighbour(main, aeaint)
                )
            if s.edge_atom_interaction:
                extra["e2a"] = Triplets.build(
                    ae_target, target, num_atoms, aeaint.edge_index.shape[1], keep=not_same_neighbour(aeaint, main)
                )
        if s.atom_interaction:
            aint = subgraph(s.cutoff_aint, s.max_neighbors_aint)
            extra.update(aint=aint, aint_groups=Groups.build(aint.edge_index[1], num_atoms))
        return GemNetGraph(
            edge_index=main.edge_index, edge_vec=main.edge_vec, edge_dist=main.edge_dist,
            cell_offsets=main.cell_offsets, swap=swap, num_atoms=num_atoms, **extra,
        )

    def _bases(self, graph: GemNetGraph) -> dict[str, torch.Tensor]:
        s = self.settings
        spherical = s.num_spherical
        unit = graph.unit_vec
        rbf_main = self.radial_main(graph.edge_dist)
        bases = {"rbf_main": rbf_main, "rad_atom": self.rbf_atom(rbf_main), "rad_out": self.rbf_out(rbf_main)}

        trip = graph.triplets
        angle = circular_basis(cosine_between(unit[trip.out], unit[trip.inp]), spherical)
        bases["rad_e2e"] = self.rbf_e2e(rbf_main)
        bases["cir_e2e"] = (self.cbf_e2e(rbf_main), trip.pad(angle).transpose(1, 2))

        if s.quad_interaction:
            quads, qint = graph.quadruplets, graph.qint
            q_unit = qint.unit_vec
            inner, outer = quads.inner, quads.outer
            # triplet d→b→a: angle ∠abd at b, between b→a (= −u of the quadruplet edge) and b→d
            cos_abd = cosine_between(-q_unit[inner.out], unit[inner.inp])
            radial = self.cbf_qint(self.radial_qint(qint.edge_dist))[inner.out]  # (T, C, L)
            bases["cir_qint"] = (radial @ circular_basis(cos_abd, spherical).unsqueeze(-1)).squeeze(-1)
            # quadruplet: angle ∠cab at a and the dihedral c-a-b-d
            cos_cab = cosine_between(unit[outer.out], q_unit[outer.inp])[quads.to_outer]
            u_ab = q_unit[outer.inp[quads.to_outer]]
            cos_dihedral = dihedral_cosine(unit[quads.out], u_ab, unit[inner.inp[quads.to_inner]])
            sph = spherical_basis(cos_cab, cos_dihedral, spherical)
            bases["sph_qint"] = (self.sbf_qint(rbf_main), quads.pad(sph).transpose(1, 2))
            bases["rad_qint"] = self.rbf_qint(rbf_main)
        if s.atom_edge_interaction or s.edge_atom_interaction:
            ae = graph.aeaint
            ae_unit = ae.unit_vec
            rbf_ae = self.radial_aeaint(ae.edge_dist)
            if s.atom_edge_interaction:
                a2e = graph.a2e
                angle = circular_basis(cosine_between(unit[a2e.out], ae_unit[a2e.inp]), spherical)
                bases["rad_a2e"] = self.rbf_a2e(rbf_ae)
                bases["cir_a2e"] = (self.cbf_a2e(rbf_main), a2e.pad(angle).transpose(1, 2))
            if s.edge_atom_interaction:
                e2a = graph.e2a
                angle = circular_basis(cosine_between(ae_unit[e2a.out], unit[e2a.inp]), spherical)
                bases["rad_e2a"] = self.rbf_e2a(rbf_main)
                bases["cir_e2a"] = (self.cbf_e2a(rbf_ae), e2a.pad(angle).transpose(1, 2))
        if s.atom_interaction:
            projected = self.rbf_aint(self.radial_aint(graph.aint.edge_dist))  # (E_aint, C)
            bases["rad_aint"] = graph.aint_groups.pad(projected).transpose(1, 2)  # (N, C, K)
        return bases

    # -- forward -----------------------------------------------------------------------------------------------
    def body(self, atomic_numbers: torch.Tensor, graph: GemNetGraph) -> AtomwiseOutput:
        bases = self._bases(graph)
        target = graph.edge_index[1]
        h = self.atom_embedding(atomic_numbers)
        m = self.edge_embedding(h, bases["rbf_main"], graph.edge_index)
        x_e, x_f = self.outputs[0](h, m, bases["rad_out"], target)
        atom_outputs, edge_outputs = [x_e], [x_f]
        features = {"x0": x_e}
        for k, (interaction, output) in enumerate(zip(self.interactions, self.outputs[1:]), start=1):
            h, m = interaction(h, m, bases, graph)
            x_e, x_f = output(h, m, bases["rad_out"], target)
            atom_outputs.append(x_e)
            edge_outputs.append(x_f)
            features.update({f"h{k}": h, f"m{k}": m, f"x{k}": x_e})
        node = self.atom_mlp(torch.cat(atom_outputs, dim=-1))
        atom_energy = self.energy_out(node).squeeze(-1)
        forces, edge = None, None
        if self.direct_forces:
            edge = self.edge_mlp(torch.cat(edge_outputs, dim=-1))
            forces = scatter_sum(self.force_out(edge) * graph.unit_vec, target, graph.num_atoms)
        if self.feature_kind == "H":
            node, edge = features[f"h{self.feature_block}"], features[f"m{self.feature_block}"]
        elif self.feature_kind == "X":
            node, edge = atom_outputs[self.feature_block], edge_outputs[self.feature_block]
        features["node"] = node
        if edge is not None:
            features["edge"] = edge
            features["edge2node"] = scatter_sum(edge, target, graph.num_atoms)
            features["edge_vector"] = scatter_sum(
                graph.unit_vec.unsqueeze(-1) * edge.unsqueeze(1), target, graph.num_atoms
            )
        return AtomwiseOutput(atom_energy=atom_energy, forces=forces, features=features)
