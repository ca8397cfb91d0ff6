"""Symmetry and consistency properties of the augkd models (tiny variants, float64)."""

import numpy as np
import pytest
import torch
from conftest import cu_adslab
from model_helpers import random_rotation, rattled_ethanol, run_model, tiny_model

from augkd.models import MODEL_NAMES, build_model

MODELS = ["schnet-tiny", "painn-tiny", "painn-tiny-grad"]
TOL = {"rtol": 1e-8, "atol": 1e-9}


@pytest.fixture
def ethanol():
    return rattled_ethanol()


def numpy_outputs(model, atoms_list):
    out = run_model(model, atoms_list)
    return {
        "energy": out.energy.detach().numpy(),
        "forces": out.forces.detach().numpy(),
        "atom_energy": out.atom_energy.detach().numpy(),
        **{name: value.detach().numpy() for name, value in out.features.items()},
    }


def structures(ethanol):
    return {"molecule": ethanol, "slab": cu_adslab(np.random.default_rng(0))}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("system", ["molecule", "slab"])
def test_rotation_and_translation(name, system, ethanol):
    model = tiny_model(name)
    atoms = structures(ethanol)[system]
    rotation = random_rotation(1)
    moved = atoms.copy()
    # periodic systems: rotate the cell with the positions; then translate everything
    moved.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    moved.positions = atoms.positions @ rotation.T + np.array([0.7, -1.3, 2.1])
    ref, new = numpy_outputs(model, [atoms]), numpy_outputs(model, [moved])
    np.testing.assert_allclose(new["energy"], ref["energy"], **TOL)
    np.testing.assert_allclose(new["atom_energy"], ref["atom_energy"], **TOL)
    np.testing.assert_allclose(new["node"], ref["node"], **TOL)
    np.testing.assert_allclose(new["forces"], ref["forces"] @ rotation.T, **TOL)
    if "vector" in ref:
        np.testing.assert_allclose(new["vector"], np.einsum("ij,njc->nic", rotation, ref["vector"]), **TOL)
    assert np.abs(ref["forces"]).max() > 1e-6  # a zero field would pass any equivariance test


@pytest.mark.parametrize("name", MODELS)
def test_permutation(name, ethanol):
    model = tiny_model(name)
    perm = np.random.default_rng(2).permutation(len(ethanol))
    ref, new = numpy_outputs(model, [ethanol]), numpy_outputs(model, [ethanol[perm]])
    np.testing.assert_allclose(new["energy"], ref["energy"], **TOL)
    for key in ("forces", "atom_energy", "node", "vector"):
        if key in ref:
            np.testing.assert_allclose(new[key], ref[key][perm], **TOL)


@pytest.mark.parametrize("name", MODELS)
def test_supercell_has_twice_the_energy_and_the_same_atoms(name):
    # cell (5.1 Å in-plane) smaller than the cutoff (6 Å): needs several images; no neighbour limit is reached
    model = tiny_model(name)
    primitive = cu_adslab(np.random.default_rng(4))
    supercell = primitive.repeat((2, 1, 1))
    ref, new = numpy_outputs(model, [primitive]), numpy_outputs(model, [supercell])
    np.testing.assert_allclose(new["energy"], 2 * ref["energy"], **TOL)
    for key in ("forces", "atom_energy", "node", "vector"):
        if key in ref:
            np.testing.assert_allclose(new[key], np.concatenate([ref[key], ref[key]]), **TOL)


@pytest.mark.parametrize("name", ["schnet-tiny", "painn-tiny-grad"])
def test_gradient_forces_match_finite_differences(name, ethanol):
    model = tiny_model(name)
    atoms = ethanol[:5]
    forces = numpy_outputs(model, [atoms])["forces"]
    step = 1e-5
    # a few random components keep the test fast; central differences are exact to O(step²)
    components = np.random.default_rng(6).choice(forces.size, size=6, replace=False)
    for i, k in zip(*np.unravel_index(components, forces.shape)):
        energies = []
        for sign in (1, -1):
            shifted = atoms.copy()
            shifted.positions[i, k] += sign * step
            energies.append(numpy_outputs(model, [shifted])["energy"][0])
        assert forces[i, k] == pytest.approx(-(energies[0] - energies[1]) / (2 * step), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("name", MODELS)
def test_batch_equals_each_system_alone_and_energy_is_the_atom_sum(name, ethanol):
    model = tiny_model(name)
    slab = cu_adslab(np.random.default_rng(5))
    together = numpy_outputs(model, [ethanol, slab])
    alone = [numpy_outputs(model, [ethanol]), numpy_outputs(model, [slab])]
    np.testing.assert_allclose(together["energy"], [alone[0]["energy"][0], alone[1]["energy"][0]], **TOL)
    for key in ("forces", "atom_energy", "node", "vector"):
        if key in together:
            np.testing.assert_allclose(together[key], np.concatenate([alone[0][key], alone[1][key]]), **TOL)
    n = len(ethanol)
    np.testing.assert_allclose(together["energy"], [together["atom_energy"][:n].sum(), together["atom_energy"][n:].sum()])


def test_outputs_shapes_and_feature_shapes_agree(ethanol):
    for name in MODEL_NAMES:
        if not name.endswith("tiny"):
            continue
        model = tiny_model(name)
        out = run_model(model, [ethanol])
        n = len(ethanol)
        assert out.energy.shape == (1,) and out.forces.shape == (n, 3) and out.atom_energy.shape == (n,)
        assert {key: tuple(value.shape[1:]) for key, value in out.features.items()} == model.feature_shapes()
        assert out.graph is not None and out.graph.edge_index.shape[0] == 2


def test_feature_layer_selects_the_block(ethanol):
    last = numpy_outputs(tiny_model("painn-tiny"), [ethanol])
    explicit = numpy_outputs(tiny_model("painn-tiny", feature_layer="U2"), [ethanol])
    after_message = numpy_outputs(tiny_model("painn-tiny", feature_layer="M2"), [ethanol])
    np.testing.assert_array_equal(explicit["node"], last["node"])
    assert not np.allclose(after_message["node"], last["node"])
    np.testing.assert_array_equal(after_message["energy"], last["energy"])  # a feature tap changes no output
    first = numpy_outputs(tiny_model("schnet-tiny", feature_layer="I1"), [ethanol])
    assert not np.allclose(first["node"], numpy_outputs(tiny_model("schnet-tiny"), [ethanol])["node"])


def test_energy_normaliser_scales_and_shifts(ethanol):
    model = tiny_model("painn-tiny")
    before = numpy_outputs(model, [ethanol])
    model.fit_energy_normalizer(0.5, 3.4)  # from (-3.2, 1.7)
    after = numpy_outputs(model, [ethanol])
    np.testing.assert_allclose(after["atom_energy"], (before["atom_energy"] + 3.2) / 1.7 * 3.4 + 0.5, **TOL)
    np.testing.assert_allclose(after["forces"], before["forces"] * 2, **TOL)


def test_gradient_forces_keep_the_graph_when_training(ethanol):
    model = tiny_model("painn-tiny-grad").train()
    out = run_model(model, [ethanol])
    out.forces.square().sum().backward()  # force loss reaches the weights only through create_graph
    assert model.embedding.weight.grad is not None and model.embedding.weight.grad.abs().sum() > 0


def test_default_model_is_float32_and_paper_presets_are_distinct():
    model = build_model("painn-small")
    assert next(model.parameters()).dtype == torch.float32
    assert model.config["hidden_channels"] == 256 and model.config["num_layers"] == 4
    assert build_model("painn").config["hidden_channels"] == 512
