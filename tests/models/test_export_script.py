"""TorchScript: ``Potential`` of PaiNN (both force modes) and SchNet compiles, survives save/load, and computes what
the eager model computes; models that build their own graphs (GemNet-OC) are refused with one line."""

import numpy as np
import pytest
import torch

from augkd.errors import ConfigError
from augkd.models import build_model
from augkd.models.data import atoms_to_batch
from augkd.models.potential import Potential, load_scripted, save_scripted, script
from augkd.student.neighbors import VerletList
from conftest import cu_adslab
from model_helpers import tiny_model


@pytest.mark.parametrize("name", ["painn-tiny", "painn-tiny-grad", "schnet-tiny"])
def test_scripted_potential_equals_the_model(name, one_thread):
    model = tiny_model(name, dtype=torch.float32).requires_grad_(False)
    scripted = load_scripted(save_scripted(script(model)))
    atoms = cu_adslab(np.random.default_rng(3))
    edges = VerletList(model.settings.cutoff, 0.0, model.settings.max_neighbors).edges(atoms)
    inputs = (torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions, dtype=torch.float32),
              torch.as_tensor(edges.edge_index), torch.as_tensor(edges.shifts, dtype=torch.float32))
    atom_energy, forces = scripted(*inputs)
    eager_energy, eager_forces = Potential(model)(*inputs)
    reference = model(atoms_to_batch([atoms]))
    assert torch.equal(atom_energy, eager_energy) and torch.equal(forces, eager_forces)
    assert float(atom_energy.sum()) == pytest.approx(float(reference.energy[0].detach()), abs=1e-5)
    np.testing.assert_allclose(forces.numpy(), reference.forces.detach().numpy(), atol=1e-5)


def test_models_with_their_own_graphs_are_not_potentials():
    with pytest.raises(ConfigError, match="builds its own graphs"):
        Potential(build_model("gemnet-oc-tiny"))
