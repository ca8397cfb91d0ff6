import numpy as np
import pytest

from augkd.errors import ConfigError
from augkd.systems.sampler import SamplerConfig, SystemSampler, system_seed
from augkd.teachers.ase_calculator import EMT_ELEMENTS

CONFIG = SamplerConfig(elements=("Cu", "Pt", "O", "H", "C", "N"), max_miller=1, max_atoms=60)


@pytest.fixture(scope="module")
def sampler():
    return SystemSampler(CONFIG)


def test_system_depends_only_on_seed_and_index(sampler):
    other = SystemSampler(CONFIG)  # a fresh process would build this one
    forward = [sampler.sample(11, i) for i in range(4)]
    backward = [other.sample(11, i) for i in reversed(range(4))][::-1]
    for a, b in zip(forward, backward):
        assert a.seed == b.seed == system_seed(11, a.index)
        np.testing.assert_array_equal(a.atoms.positions, b.atoms.positions)
        np.testing.assert_array_equal(a.atoms.numbers, b.atoms.numbers)
        assert (a.bulk, a.millers, a.adsorbate, a.slab_key) == (b.bulk, b.millers, b.adsorbate, b.slab_key)
    assert len({s.atoms.get_chemical_formula() + str(s.atoms.positions.sum()) for s in forward}) == 4
    assert sampler.sample(12, 0).seed != forward[0].seed


def test_systems_are_oc20_style_adslabs(sampler):
    for index in range(6):
        system = sampler.sample(3, index)
        atoms = system.atoms
        tags = atoms.get_tags()
        assert set(np.unique(tags)) == {0, 1, 2}
        assert list(atoms.pbc) == [True, True, False]
        fixed = np.zeros(len(atoms), bool)
        fixed[atoms.constraints[0].get_indices()] = True
        assert (fixed == (tags == 0)).all()
        assert len(atoms) <= CONFIG.max_atoms
        assert set(atoms.get_chemical_symbols()) <= set(CONFIG.elements)
        assert max(abs(m) for m in system.millers) <= 1
        # the adsorbate sits above the surface, not inside it
        assert atoms.positions[tags == 2, 2].min() > atoms.positions[tags == 1, 2].max() - 0.5
        assert len(system.slab) == (tags != 2).sum()
        assert type(atoms).__name__ == "Atoms" and not atoms.info


def test_filters_and_bad_configs():
    with pytest.raises(ConfigError, match="leaves no bulk"):
        SystemSampler(SamplerConfig(elements=("Xe",)))
    with pytest.raises(ConfigError, match="leaves no adsorbate"):
        SystemSampler(SamplerConfig(elements=("Cu", "Pt")))
    with pytest.raises(ConfigError, match="placement"):
        SamplerConfig(placement="anywhere")
    tiny = SystemSampler(SamplerConfig(elements=("Cu", "O", "H"), max_miller=1, max_atoms=5))
    with pytest.raises(ConfigError, match="max_atoms=5"):
        tiny.sample(0, 0)
    # the teacher's element list narrows the user's
    narrowed = SystemSampler(SamplerConfig(max_miller=1), allowed_elements=EMT_ELEMENTS)
    assert all(b.elements <= EMT_ELEMENTS for b in narrowed.bulks)


def test_user_bulk_file(tmp_path):
    from ase.build import bulk
    from ase.io import write

    path = tmp_path / "mybulks.extxyz"
    write(path, [bulk("Cu", "fcc", a=3.6), bulk("Pd", "fcc", a=3.89)])
    sampler = SystemSampler(SamplerConfig(bulks=str(path), elements=("Cu", "Pd", "O", "H", "C", "N"), max_miller=1))
    assert [b.name for b in sampler.bulks] == ["mybulks:0", "mybulks:1"]
    seen = {sampler.sample(0, i).bulk for i in range(6)}
    assert seen <= {"mybulks:0", "mybulks:1"} and seen
