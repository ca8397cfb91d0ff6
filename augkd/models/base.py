"""What every augkd model shares: graph building, energy normalisation, energy sum and forces.

A model subclass only turns (atomic numbers, graph) into per-atom raw energies, optional direct raw forces and
named features (``AtomwiseOutput``); ``AtomisticModel.forward`` does the rest and returns a ``ModelOutput``.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from augkd.errors import ConfigError
from augkd.models.interface import Graph, ModelOutput, build_graph


@dataclass
class AtomwiseOutput:
    """A model body's raw, unnormalised outputs (in units of the energy scale)."""

    atom_energy: torch.Tensor  # (N,)
    forces: torch.Tensor | None  # (N, 3) direct forces, None for -∇E models
    features: dict[str, torch.Tensor] = field(default_factory=dict)


def scatter_sum(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum rows of ``values`` into ``size`` bins along dim 0 (messages onto their centre atom)."""
    shape = list(values.shape)  # written so that TorchScript compiles it
    shape[0] = size
    return values.new_zeros(shape).index_add_(0, index, values)


def parse_feature_layer(value: str | None, kinds: str, num_blocks: int, default: str) -> tuple[str, int]:
    """``"U6"`` → ("U", 6): the block kind (one letter of ``kinds``) and its 1-based index; None → ``default``."""
    text = default if value is None else value
    match = re.fullmatch(rf"([{kinds}])(\d+)", text)
    if not match or not 1 <= int(match.group(2)) <= num_blocks:
        choices = f"{kinds[0]}1..{kinds[0]}{num_blocks}" + "".join(f", {k}1..{k}{num_blocks}" for k in kinds[1:])
        raise ConfigError(f"feature_layer '{value}' does not name a block of this model (choose {choices})")
    return match.group(1), int(match.group(2))


class AtomisticModel(nn.Module):
    """Base class: ``forward(batch) -> ModelOutput`` with energy = Σ atom_energy, atom_energy in eV.

    Per-atom energies are ``energy_scale * raw + energy_shift``; the trainer sets both with
    ``fit_energy_normalizer`` so that the network itself learns O(1) targets. Direct forces are scaled by
    ``force_scale`` (set with the energy normaliser), gradient forces come out in eV/Å by themselves.

    Subclasses set ``direct_forces``, keep their settings dataclass in ``self.settings`` and implement ``body``
    and ``feature_shapes``. ``name`` is the registry name (``build_model`` sets it).
    """

    # plain class attributes (no annotations): TorchScript would try to resolve them when the model is scripted
    name = ""
    direct_forces = False
    # True: the model runs on one radius graph (cutoff, max_neighbors) and implements ``atomwise``, so a neighbour
    # list can come from outside (``augkd.models.potential.Potential``: MD with a Verlet skin, TorchScript export)
    edge_list = False
    # properties TorchScript must not compile (they build Python objects)
    __jit_unused_properties__ = ["config", "needs_data_fit"]

    def __init__(self, settings):
        super().__init__()
        self.settings = settings
        self.register_buffer("energy_shift", torch.zeros(()))
        self.register_buffer("energy_scale", torch.ones(()))
        self.register_buffer("force_scale", torch.ones(()))

    @property
    def config(self) -> dict:
        """Plain dict of the constructor settings; ``build_model(model.name, **model.config)`` rebuilds the model."""
        return asdict(self.settings)

    def fit_energy_normalizer(self, mean_per_atom: float, std: float, force_std: float | None = None) -> None:
        """Per-atom energy shift/scale, and the scale of direct forces (default ``std``).

        Direct forces get a scale of their own: per-atom energy spreads and force magnitudes can differ by an order
        of magnitude, and a head that must output 10x its natural range learns slowly.
        """
        force_std = std if force_std is None else force_std
        if not (std > 0 and force_std > 0):
            raise ConfigError(f"normaliser scales must be positive (got energy {std}, forces {force_std})")
        self.energy_shift.fill_(float(mean_per_atom))
        self.energy_scale.fill_(float(std))
        self.force_scale.fill_(float(force_std))

    @property
    def needs_data_fit(self) -> bool:
        """True while the model has constants still to be fitted on data (GemNet-OC's scale factors)."""
        return False

    def fit_to_data(self, batch) -> list[str]:
        """Fit such constants on one batch; returns the names of those the batch could not fit."""
        return []

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def per_edge_features(self) -> tuple[str, ...]:
        """Names in ``feature_shapes`` with one row per edge of ``ModelOutput.graph`` (the rest: one per atom)."""
        return ()

    def prepare_for_inference(self) -> bool:
        """Speed-ups that hold only while the weights stay as they are (SchNet: tabulated filters); True when the
        model changed (its TorchScript must then be compiled again). Never call it on a model still training."""
        return False

    def make_graph(self, batch) -> Graph:
        """The graph ``body`` runs on; models with several graphs return a ``Graph`` subclass that carries them."""
        return build_graph(batch, self.settings.cutoff, self.settings.max_neighbors)

    def body(self, atomic_numbers: torch.Tensor, graph: Graph) -> AtomwiseOutput:
        raise NotImplementedError

    def atomwise(
        self, atomic_numbers: torch.Tensor, edge_index: torch.Tensor, edge_vec: torch.Tensor, edge_dist: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        """``body`` on one radius graph given as tensors: (raw atom energies, raw direct forces or None, features).

        Only models with ``edge_list = True`` implement it (and then their ``body`` calls it); written so that
        TorchScript compiles it.
        """
        raise NotImplementedError(f"{type(self).__name__} builds more than one graph and has no atomwise()")

    @torch.jit.unused  # batches and dataclasses stay in Python; ``Potential`` is the scripted entry
    def forward(self, batch) -> ModelOutput:
        gradient_forces = not self.direct_forces
        pos = batch.pos
        # A computed (non-leaf) position tensor, e.g. X + δ in an adversarial attack, means the caller differentiates
        # through the forces: keep their graph then, as in training.
        create_graph = self.training or not pos.is_leaf
        with torch.enable_grad() if gradient_forces else contextlib.nullcontext():
            if gradient_forces and not pos.requires_grad:
                pos.requires_grad_(True)  # before the graph is built, so edge vectors depend on it (fairchem's way)
            graph = self.make_graph(batch)
            raw = self.body(batch.atomic_numbers.long(), graph)
            atom_energy = self.energy_scale * raw.atom_energy + self.energy_shift
            energy = scatter_sum(atom_energy, batch.batch, int(batch.natoms.shape[0]))
            if gradient_forces:
                (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=create_graph)
                forces = -grad
            else:
                forces = self.force_scale * raw.forces
        return ModelOutput(
            energy=energy, forces=forces, atom_energy=atom_energy, features=raw.features, graph=graph
        )
