"""Teacher targets from cached rows: uncached rows are zeros and masked, or filled by the online teacher."""

import torch

from augkd.kd.targets import TeacherTargets


def cached_batch():
    """Three systems of 2, 1 and 2 atoms; systems 0 and 2 carry cached outputs (node features, per-atom energies)."""
    rows = torch.tensor([True, False, True])
    atoms = torch.tensor([True, True, False, True, True])
    cached = {
        "energy": torch.tensor([1.0, 3.0]),
        "forces": torch.arange(12, dtype=torch.float32).reshape(4, 3),
        "atom_energy": torch.tensor([0.5, 0.5, 1.5, 1.5]),
        "features": {"node": torch.ones(4, 2)},
    }
    return cached, rows, atoms


def test_cached_rows_scatter_into_the_batch_and_mask_the_rest():
    cached, rows, atoms = cached_batch()
    targets = TeacherTargets.from_cached(cached, rows, atoms)
    assert targets.energy.tolist() == [1.0, 0.0, 3.0]
    assert torch.equal(targets.forces[atoms], cached["forces"]) and not targets.forces[2].any()
    assert targets.atom_energy.tolist() == [0.5, 0.5, 0.0, 1.5, 1.5]
    assert targets.features["node"][:, 0].tolist() == [1.0, 1.0, 0.0, 1.0, 1.0]
    assert torch.equal(targets.mask, atoms) and targets.system_mask is None


def test_fill_labels_the_uncached_rows_and_drops_the_mask():
    cached, rows, atoms = cached_batch()
    online = TeacherTargets(
        energy=torch.tensor([7.0], dtype=torch.float64), forces=torch.full((1, 3), 2.0, dtype=torch.float64),
        atom_energy=torch.tensor([7.0]), features={"node": torch.full((1, 2), 5.0)},
    )
    targets = TeacherTargets.from_cached(cached, rows, atoms).fill(online, rows, atoms)
    assert targets.mask is None
    assert targets.energy.tolist() == [1.0, 7.0, 3.0] and targets.energy.dtype == torch.float32
    assert targets.forces[2].tolist() == [2.0, 2.0, 2.0] and targets.forces.dtype == torch.float32
    assert targets.atom_energy[2] == 7.0 and targets.features["node"][2].tolist() == [5.0, 5.0]
