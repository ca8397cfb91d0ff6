"""``Potential``: an edge-list model (PaiNN, SchNet) run on a neighbour list given from outside.

One structure per call: (atomic numbers, positions, edge list, Cartesian shifts) → (atom energies, forces). The
edge list follows ``augkd.models.interface``: ``edge_index[0]`` = source j (the neighbour), ``edge_index[1]`` =
target i (the centre), and the edge vector is ``positions[j] - positions[i] + shift`` with ``shift`` = the integer
cell offset times the cell (Å). The caller owns the neighbour list (``augkd.student.neighbors``: a Verlet skin,
the model's cutoff and neighbour limit), which is what lets MD skip most graph builds; the graph the model would
build for itself (``AtomisticModel.forward``) has exactly these edges.

``torch.jit.script(Potential(model))`` compiles (forces as −∇E included: ``torch.autograd.grad`` runs inside the
compiled code), so an exported student runs with torch alone.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Tuple

import torch
from torch import nn

from augkd.errors import ConfigError
from augkd.models.base import AtomisticModel


@contextlib.contextmanager
def quiet_torchscript():
    """Silence torch 2.13's DeprecationWarning on ``torch.jit.script/save/load``: augkd uses TorchScript knowingly
    (measured against ``torch.export`` in ``augkd.student.export``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        yield


def script(model: AtomisticModel) -> torch.jit.ScriptModule:
    """``torch.jit.script(Potential(model))``."""
    with quiet_torchscript():
        return torch.jit.script(Potential(model))


def save_scripted(module: torch.jit.ScriptModule) -> bytes:
    buffer = io.BytesIO()
    with quiet_torchscript():
        torch.jit.save(module, buffer)
    return buffer.getvalue()


def load_scripted(data: bytes, device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    """A scripted ``Potential`` from ``save_scripted``'s bytes, its weights frozen."""
    with quiet_torchscript():
        module = torch.jit.load(io.BytesIO(data), map_location=device)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


class Potential(nn.Module):
    """Per-atom energies (eV) and forces (eV/Å) of one structure on a given edge list.

    Forces are −∇E for conservative models and the model's direct-force head otherwise. Call it with autograd
    enabled for conservative models (not under ``torch.no_grad``); the model's weights never need gradients.
    """

    def __init__(self, model: AtomisticModel):
        super().__init__()
        if not model.edge_list:
            raise ConfigError(f"model '{model.name}' builds its own graphs; it cannot run on a given neighbour list")
        self.model = model
        self.direct_forces = bool(model.direct_forces)

    def forward(
        self, atomic_numbers: torch.Tensor, positions: torch.Tensor, edge_index: torch.Tensor, shifts: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(N,) atom energies in eV and (N, 3) forces in eV/Å, both detached.

        ``atomic_numbers`` (N,) int64; ``positions`` (N, 3) Å in the model's dtype; ``edge_index`` (2, E) int64;
        ``shifts`` (E, 3) Å.
        """
        if not self.direct_forces:
            positions = positions.detach().requires_grad_(True)
        edge_vec = positions[edge_index[0]] - positions[edge_index[1]] + shifts
        edge_dist = torch.linalg.vector_norm(edge_vec, dim=-1)
        raw_energy, raw_forces, _ = self.model.atomwise(atomic_numbers, edge_index, edge_vec, edge_dist)
        atom_energy = self.model.energy_scale * raw_energy + self.model.energy_shift
        if self.direct_forces:
            if raw_forces is None:
                raise RuntimeError("a direct-force model gave no forces")
            forces = self.model.force_scale * raw_forces
        else:
            (gradient,) = torch.autograd.grad([atom_energy.sum()], [positions])
            if gradient is None:
                raise RuntimeError("the energy does not depend on the positions")
            forces = -gradient
        return atom_energy.detach(), forces.detach()
