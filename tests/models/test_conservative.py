"""Conservative models (forces = −∇E): finite differences on periodic slabs, through the model's own graph and
through a given neighbour list, and an energy that stays continuous as a neighbour crosses the cutoff."""

import numpy as np
import pytest
import torch
from ase import Atoms

from augkd.models.data import atoms_to_batch
from augkd.models.potential import Potential
from augkd.student.neighbors import VerletList
from conftest import cu_adslab
from model_helpers import tiny_model

CONSERVATIVE = {
    "painn-tiny-grad": {},
    "schnet-tiny": {},
    "gemnet-oc-tiny": {"direct_forces": False},
}


def energy_and_forces(model, atoms):
    output = model(atoms_to_batch([atoms], dtype=torch.float64))
    return float(output.energy[0].detach()), output.forces.detach().numpy()


def potential_energy_and_forces(potential, atoms, cutoff, max_neighbors):
    edges = VerletList(cutoff, skin=0.0, max_neighbors=max_neighbors).edges(atoms)
    atom_energy, forces = potential(
        torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions), torch.as_tensor(edges.edge_index),
        torch.as_tensor(edges.shifts),
    )
    return float(atom_energy.sum()), forces.numpy()


def assert_forces_are_minus_gradient(function, atoms, components=6, step=1e-5):
    _, forces = function(atoms)
    rng = np.random.default_rng(4)
    free = np.arange(len(atoms))
    for index in rng.choice(free.size * 3, size=components, replace=False):
        i, k = divmod(int(index), 3)
        energies = []
        for sign in (1, -1):
            shifted = atoms.copy()
            shifted.positions[i, k] += sign * step
            energies.append(function(shifted)[0])
        assert forces[i, k] == pytest.approx(-(energies[0] - energies[1]) / (2 * step), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("name", sorted(CONSERVATIVE))
def test_forces_are_minus_the_energy_gradient_on_a_periodic_slab(name):
    model = tiny_model(name, **CONSERVATIVE[name])
    if model.needs_data_fit:
        model.fit_to_data(atoms_to_batch([cu_adslab(np.random.default_rng(0))], dtype=torch.float64))
    assert not model.direct_forces
    assert_forces_are_minus_gradient(lambda atoms: energy_and_forces(model, atoms), cu_adslab(np.random.default_rng(1)))


@pytest.mark.parametrize("name", ["painn-tiny-grad", "schnet-tiny"])
def test_potential_on_a_given_neighbour_list_is_conservative_and_matches_the_model(name):
    model = tiny_model(name)
    potential = Potential(model)
    cutoff, limit = model.settings.cutoff, model.settings.max_neighbors
    atoms = cu_adslab(np.random.default_rng(2))
    function = lambda a: potential_energy_and_forces(potential, a, cutoff, limit)  # noqa: E731
    assert_forces_are_minus_gradient(function, atoms)
    energy, forces = function(atoms)
    reference_energy, reference_forces = energy_and_forces(model, atoms)
    assert energy == pytest.approx(reference_energy, abs=1e-9)
    np.testing.assert_allclose(forces, reference_forces, atol=1e-10)


@pytest.mark.parametrize("name", ["painn-tiny-grad", "painn-tiny", "schnet-tiny"])
def test_energy_is_continuous_as_a_neighbour_crosses_the_cutoff(name):
    """PaiNN's filter bias is multiplied by the cutoff function: an edge at r_c contributes nothing."""
    model = tiny_model(name)
    cutoff = model.settings.cutoff
    energies = []
    for distance in (cutoff - 1e-6, cutoff + 1e-6):
        atoms = Atoms("CuO", positions=[[0, 0, 0], [distance, 0, 0]])
        energies.append(energy_and_forces(model, atoms)[0])
    assert energies[0] == pytest.approx(energies[1], abs=1e-8)
