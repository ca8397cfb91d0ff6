"""Neighbour lists: the same edges as the graph a model builds for itself; Verlet-skin reuse changes no force."""

import numpy as np
import pytest
import torch
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase import units

from augkd.calculator import AugkdCalculator
from augkd.errors import AugkdError
from augkd.models.data import atoms_to_batch
from augkd.models.interface import build_graph
from augkd.student.neighbors import VerletList, pair_list
from student.student_helpers import exported, slab


def edge_set(source, target, vectors):
    return {(int(s), int(t), *np.round(v, 4)) for s, t, v in zip(source, target, vectors)}


@pytest.mark.parametrize("max_neighbors", [1000, 50, 12])  # 12 and 50 bind in a Cu slab (ties kept, as fairchem)
@pytest.mark.parametrize("seed", [0, 1])
def test_edges_equal_the_models_own_graph(max_neighbors, seed):
    atoms = slab((3, 3, 4), seed=seed, adsorbate="O")
    atoms.positions += np.random.default_rng(seed).normal(scale=0.1, size=atoms.positions.shape)
    edges = VerletList(6.0, skin=1.0, max_neighbors=max_neighbors).edges(atoms)
    graph = build_graph(atoms_to_batch([atoms], dtype=torch.float64), 6.0, max_neighbors)
    vectors = atoms.positions[edges.edge_index[0]] - atoms.positions[edges.edge_index[1]] + edges.shifts
    ours = edge_set(*edges.edge_index, vectors)
    theirs = edge_set(*graph.edge_index.numpy(), graph.edge_vec.detach().numpy())
    assert ours == theirs
    np.testing.assert_allclose(edges.distances, np.linalg.norm(vectors, axis=1))


@pytest.mark.parametrize("max_neighbors", [50, 12])
def test_a_reused_list_limits_neighbours_as_a_fresh_one(max_neighbors):
    """Between builds the limit ranks candidates out to cutoff + skin: the same edges as a list built every call."""
    atoms = slab((3, 3, 4), seed=3, adsorbate="O")
    reused = VerletList(6.0, skin=1.0, max_neighbors=max_neighbors)
    fresh = VerletList(6.0, skin=0.0, max_neighbors=max_neighbors)
    rng = np.random.default_rng(3)
    start = atoms.positions.copy()
    reused.edges(atoms)
    for _ in range(5):
        atoms.positions = start + rng.uniform(-0.28, 0.28, size=start.shape)  # < skin/2 (0.5 Å) from the build
        ours, theirs = reused.edges(atoms), fresh.edges(atoms)
        np.testing.assert_array_equal(ours.edge_index, theirs.edge_index)
        np.testing.assert_array_equal(ours.shifts, theirs.shifts)
        np.testing.assert_allclose(ours.distances, theirs.distances, rtol=1e-14)
    assert reused.builds == 1 and fresh.builds == 5


def test_molecule_without_cell_and_rebuild_triggers():
    from ase.build import molecule

    atoms = molecule("CH3CH2OH")
    nl = VerletList(3.0, skin=0.5)
    first = nl.edges(atoms)
    assert nl.builds == 1 and first.edge_index.shape[1] > 0 and not first.shifts.any()
    atoms.positions[0, 0] += 0.2  # less than skin/2: reused
    nl.edges(atoms)
    assert nl.builds == 1
    atoms.positions[0, 0] += 0.1  # 0.3 Å from the build: rebuilt
    nl.edges(atoms)
    assert nl.builds == 2
    atoms.set_cell(np.eye(3) * 20, scale_atoms=False)  # a new cell: rebuilt
    nl.edges(atoms)
    assert nl.builds == 3


def test_periodic_direction_without_cell_vector_is_an_error():
    with pytest.raises(AugkdError, match="periodic directions"):
        pair_list(np.zeros((2, 3)), np.diag([5.0, 5.0, 0.0]), np.array([True, True, True]), 3.0)


def test_verlet_reuse_gives_the_forces_of_a_rebuild_every_step_over_200_md_steps(tmp_path_factory):
    """The same MD trajectory evaluated by a calculator that reuses its list (skin 1 Å) and one that rebuilds it
    every step (skin 0): identical forces, while the reusing one built its list only a few times."""
    student = exported(tmp_path_factory)
    reusing = AugkdCalculator(student, device="cpu", threads=1, skin=1.0)
    rebuilding = AugkdCalculator(student, device="cpu", threads=1, skin=0.0)
    atoms = slab((3, 3, 3), seed=5)
    thermalize_momenta(atoms, 1500, rng=np.random.default_rng(0))  # hot: lists must move
    atoms.calc = reusing
    dynamics = VelocityVerlet(atoms, 2.0 * units.fs)
    worst = []

    def compare():
        probe = atoms.copy()
        probe.calc = rebuilding
        worst.append(float(np.abs(probe.get_forces(apply_constraint=False)
                                  - atoms.get_forces(apply_constraint=False)).max()))

    dynamics.attach(compare, interval=1)
    dynamics.run(200)
    assert len(worst) == 201
    assert max(worst) < 1e-5  # same edges in the same order: equal up to float32 rounding of the shifts
    assert rebuilding.neighbors.builds == 201
    assert 1 < reusing.neighbors.builds < 50
