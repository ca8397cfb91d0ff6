"""A small deterministic torch teacher for relaxation tests: a pairwise Morse potential in float64.

``MorseTeacher`` speaks the ``TorchTeacher`` protocol (``predict(batch) -> ModelOutput`` on a fairchem batch) and
hands out an ASE calculator that runs the very same code one structure at a time, so the batched and the ASE
relaxers can be compared with one teacher. Its minima are well defined (unlike a random network's), it has
per-atom energies and a small ``node`` feature, and it can be told to blow up (NaN) for chosen systems.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from ase.calculators.calculator import Calculator

from augkd.models.base import scatter_sum
from augkd.models.data import atoms_to_batch
from augkd.models.interface import ModelOutput, build_graph
from augkd.teachers.checkpoint import TeacherCalculator
from augkd.teachers.interface import Labels, TeacherIdentity, check_properties


class MorseTeacher:
    """E = Σ_pairs D·(e^{−2α(r−r0)} − 2e^{−α(r−r0)})·s(r), s a cosine switch from ``switch_on`` to ``cutoff`` (Å).

    Defaults: Girifalco–Weizer Morse parameters of copper, used for every element. ``explode_element`` /
    ``explode_below``: a system holding that element gets NaN labels once its energy drops below that value (eV),
    a stand-in for a model that diverges mid-relaxation.
    """

    def __init__(
        self,
        depth: float = 0.3429,
        alpha: float = 1.3588,
        r0: float = 2.866,
        cutoff: float = 6.0,
        switch_on: float = 4.5,
        explode_element: int | None = None,
        explode_below: float = math.inf,
    ):
        self.depth, self.alpha, self.r0 = depth, alpha, r0
        self.cutoff, self.switch_on = cutoff, switch_on
        self.explode_element, self.explode_below = explode_element, explode_below
        self.identity = TeacherIdentity(name="morse-test", kind="test")
        self.elements = None
        self.dtype = torch.float64
        self.device = torch.device("cpu")
        self.calls = 0
        self.batch_sizes: list[int] = []

    # the rest of what a ``TorchTeacher`` declares
    conservative = True
    differentiable = False
    offered_properties = ("energy", "forces", "atom_energy", "node")

    def per_edge_features(self) -> tuple[str, ...]:
        return ()

    def graph_cutoff(self):
        return None  # it does not say its cutoff

    def label_batch(self, atoms_list, properties: Sequence[str] = ("energy", "forces")) -> list[Labels]:
        return [self.label(atoms, properties) for atoms in atoms_list]

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"node": (2,)}

    def predict(self, batch) -> ModelOutput:
        self.calls += 1
        systems = int(batch.natoms.shape[0])
        self.batch_sizes.append(systems)
        pos = batch.pos.detach().to(torch.float64).requires_grad_(True)
        batch.pos = pos
        with torch.enable_grad():
            graph = build_graph(batch, self.cutoff, max_neighbors=100_000)
            r = graph.edge_dist
            x = torch.exp(-self.alpha * (r - self.r0))
            t = ((r - self.switch_on) / (self.cutoff - self.switch_on)).clamp(0.0, 1.0)
            switch = 0.5 * (1.0 + torch.cos(math.pi * t))
            pair = self.depth * (x * x - 2.0 * x) * switch
            target = graph.edge_index[1]
            atom_energy = 0.5 * scatter_sum(pair, target, pos.shape[0])  # each pair appears in both directions
            energy = scatter_sum(atom_energy, batch.batch, systems)
            (grad,) = torch.autograd.grad(energy.sum(), pos)
        forces = -grad
        coordination = scatter_sum(switch, target, pos.shape[0])
        energy, atom_energy = energy.detach(), atom_energy.detach()
        if self.explode_element is not None:
            holds = scatter_sum((batch.atomic_numbers == self.explode_element).double(), batch.batch, systems) > 0
            blown = holds & (energy < self.explode_below)
            atoms_blown = blown[batch.batch]
            energy = torch.where(blown, float("nan"), energy)
            forces = torch.where(atoms_blown[:, None], float("nan"), forces)
        return ModelOutput(
            energy=energy,
            forces=forces.detach(),
            atom_energy=atom_energy,
            features={"node": torch.stack([atom_energy, coordination.detach()], dim=1)},
        )

    def label(self, atoms, properties: Sequence[str] = ("energy", "forces")) -> Labels:
        wanted = check_properties(self.identity.name, properties, ("energy", "forces", "atom_energy", "node"))
        output = self.predict(atoms_to_batch([atoms], dtype=torch.float64))
        return Labels(
            energy=float(output.energy[0]),
            forces=output.forces.numpy().astype(np.float64),
            atom_energy=output.atom_energy.numpy() if "atom_energy" in wanted else None,
            features={"node": output.features["node"].numpy()} if "node" in wanted else {},
        )

    def calculator(self) -> Calculator:
        return TeacherCalculator(self)


def painn_checkpoint_file(path):
    """A random painn-tiny (−∇E forces, seed 1) saved as an augkd checkpoint at ``path``: a ``ckpt:`` torch teacher."""
    from augkd.models import build_model
    from augkd.models.checkpoint import save_model

    torch.manual_seed(1)
    model = build_model("painn-tiny", direct_forces=False)
    model.fit_energy_normalizer(-3.0, 20.0)
    return save_model(path, model)
