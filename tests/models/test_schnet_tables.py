"""SchNet's inference form (``prepare_for_inference``: tabulated filters, folded linear maps): the same energies and
forces as the networks, forces still −∇E, nothing from pairs past the cutoff, TorchScript compiles it, and
``AugkdCalculator`` uses it."""

import copy

import numpy as np
import pytest
import torch

from augkd.models.potential import Potential, script
from augkd.student.neighbors import VerletList
from conftest import cu_adslab
from model_helpers import tiny_model
from test_conservative import assert_forces_are_minus_gradient

#: a SchNet whose filters are as sharp as the paper's (Gaussians 0.03 Å apart) but small enough for a unit test
SHARP = {"num_gaussians": 200, "cutoff": 6.0, "num_filters": 32, "hidden_channels": 32}


def tabulated(model):
    table_model = copy.deepcopy(model)
    assert table_model.prepare_for_inference()
    return table_model


def evaluate(model, atoms, skin=0.0):
    """(energy, forces) of ``Potential(model)`` on a neighbour list with ``skin`` (pairs up to cutoff + skin)."""
    settings = model.settings
    edges = VerletList(settings.cutoff, skin=skin, max_neighbors=settings.max_neighbors).edges(atoms)
    dtype = model.embedding.weight.dtype
    atom_energy, forces = Potential(model)(
        torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions, dtype=dtype),
        torch.as_tensor(edges.edge_index), torch.as_tensor(edges.shifts, dtype=dtype))
    return float(atom_energy.sum()), forces.numpy()


@pytest.mark.parametrize("overrides", [{}, SHARP], ids=["tiny", "sharp"])
def test_tables_give_the_networks_energy_and_forces(overrides):
    model = tiny_model("schnet-tiny", **overrides)
    atoms = cu_adslab(np.random.default_rng(2))
    atoms.rattle(0.1, seed=5)
    energy, forces = evaluate(model, atoms)
    table_energy, table_forces = evaluate(tabulated(model), atoms)
    assert table_energy == pytest.approx(energy, abs=1e-6 * len(atoms))
    assert np.abs(table_forces - forces).max() <= 1e-5 * np.abs(forces).max()
    assert np.abs(forces).max() > 1e-3  # the comparison is not between zeros


def test_folding_the_linear_maps_changes_no_number():
    """Without the residual stream (each block's last layer multiplied into the later readers of h), float64."""
    model = tiny_model("schnet-tiny", num_interactions=3)
    atoms = cu_adslab(np.random.default_rng(4))
    energy, forces = evaluate(model, atoms)
    folded = copy.deepcopy(model)
    folded.fold_linear_maps()
    folded_energy, folded_forces = evaluate(folded, atoms)
    assert folded_energy == pytest.approx(energy, abs=1e-10)
    np.testing.assert_allclose(folded_forces, forces, atol=1e-10)
    assert np.abs(forces).max() > 1e-3


def test_tabulated_forces_are_minus_the_energy_gradient():
    model = tabulated(tiny_model("schnet-tiny", **SHARP))
    assert_forces_are_minus_gradient(lambda atoms: evaluate(model, atoms), cu_adslab(np.random.default_rng(1)))


def test_pairs_past_the_cutoff_add_nothing():
    """A Verlet list holds pairs up to cutoff + skin: the table ends at the cutoff, with zero value and slope."""
    model = tabulated(tiny_model("schnet-tiny", **SHARP))
    atoms = cu_adslab(np.random.default_rng(2))
    tight, loose = evaluate(model, atoms), evaluate(model, atoms, skin=2.0)
    assert loose[0] == pytest.approx(tight[0], abs=1e-10)
    np.testing.assert_allclose(loose[1], tight[1], atol=1e-10)


def test_scripted_tables_equal_the_eager_ones(one_thread):
    model = tabulated(tiny_model("schnet-tiny", dtype=torch.float32, **SHARP))
    atoms = cu_adslab(np.random.default_rng(3))
    edges = VerletList(model.settings.cutoff, 0.0, model.settings.max_neighbors).edges(atoms)
    inputs = (torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions, dtype=torch.float32),
              torch.as_tensor(edges.edge_index), torch.as_tensor(edges.shifts, dtype=torch.float32))
    scripted, eager = script(model)(*inputs), Potential(model)(*inputs)
    # float32: the shared Hermite weights collect their gradient from every interaction, in an order that differs
    # between the TorchScript and eager autograd graphs (~2e-6 eV/Å)
    torch.testing.assert_close(scripted, eager, rtol=1e-5, atol=1e-5)


def test_the_tables_stay_out_of_checkpoints():
    model = tiny_model("schnet-tiny", dtype=torch.float32)
    weights = {key: value.clone() for key, value in model.state_dict().items()}
    model = tabulated(model)
    assert not {"filter_tables", "element_inputs"} & set(model.state_dict())
    assert not any("folded" in key for key in model.state_dict())
    for key, value in model.state_dict().items():  # the float64 pass leaves every weight and dtype as it was
        assert value.dtype == weights[key].dtype and torch.equal(value, weights[key]), key
    nodes = 20 * (model.settings.num_gaussians - 1) + 1
    assert model.filter_tables.shape == (2, 2 * nodes, model.settings.num_filters)
