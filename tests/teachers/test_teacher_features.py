"""Teacher features, per-atom energies and batched ``predict`` for CHGNet, SevenNet-0 and a fairchem v2 checkpoint.

The fairchem checkpoint is a tiny random-weight UMA/eSEN-style model the test builds (``fairchem_tiny.py``).
"""

import numpy as np
import pytest
from ase.build import add_adsorbate, fcc111
from conftest import cu_adslab
from scipy.spatial.transform import Rotation
from teachers.fairchem_tiny import save_tiny_fairchem_checkpoint

from augkd.errors import ConfigError
from augkd.hashing import sha256_file
from augkd.teachers import Teacher, load_teacher
from augkd.teachers.interface import Labels, TorchTeacher

FEATURES = ("atom_energy", "node", "vector")


@pytest.fixture(scope="module")
def fairchem_checkpoint(tmp_path_factory):
    return save_tiny_fairchem_checkpoint(tmp_path_factory.mktemp("fairchem") / "tiny-esen.pt")


@pytest.fixture(
    scope="module",
    params=["chgnet", pytest.param("sevennet", marks=pytest.mark.slow), "fairchem"],
)
def teacher(request):
    if request.param == "sevennet":
        pytest.importorskip("sevenn")
    if request.param == "fairchem":
        return load_teacher(f"fairchem:{request.getfixturevalue('fairchem_checkpoint')}")
    return load_teacher(request.param)


@pytest.fixture(scope="module")
def slab():
    return cu_adslab(np.random.default_rng(0))


@pytest.fixture(scope="module")
def other_slab():
    atoms = fcc111("Pt", size=(2, 2, 2), vacuum=8.0)
    add_adsorbate(atoms, "H", 1.0, "fcc")
    add_adsorbate(atoms, "C", 1.8, "hcp")
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.fixture(scope="module")
def slab_labels(teacher, slab):
    """Every offered property of ``slab``, computed once per teacher (CPU teachers are slow here)."""
    return full_label(teacher, slab)


def offered(teacher):
    return [p for p in FEATURES if p == "atom_energy" or p in teacher.feature_shapes()]


def full_label(teacher, atoms) -> Labels:
    return teacher.label(atoms, ("energy", "forces", *offered(teacher)))


def close(actual, expected, rel=1e-4):
    """Float32 model outputs: absolute tolerance relative to the magnitude of the expected values."""
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rel * max(1.0, float(np.abs(expected).max())))


def rotated(atoms, seed=3, shift=(0.7, -1.3, 0.4)):
    """Rotate the cell and the positions together (a periodic slab stays the same crystal), then translate."""
    matrix = Rotation.random(random_state=seed).as_matrix()
    moved = atoms.copy()
    moved.set_cell(atoms.cell.array @ matrix.T, scale_atoms=False)
    moved.positions = atoms.positions @ matrix.T + np.asarray(shift)
    return moved, matrix


def test_protocol_and_shapes(teacher, slab, slab_labels):
    assert isinstance(teacher, Teacher) and isinstance(teacher, TorchTeacher)
    shapes = teacher.feature_shapes()
    assert "node" in shapes
    labels = slab_labels
    n = len(slab)
    assert labels.forces.shape == (n, 3) and labels.atom_energy.shape == (n,)
    for name, shape in shapes.items():
        assert labels.features[name].shape == (n, *shape), name
        assert np.isfinite(labels.features[name]).all()
    # per-atom energies are in eV and add up to the total energy
    assert labels.atom_energy.sum() == pytest.approx(labels.energy, abs=1e-4)
    # the feature path gives the same energy and forces as the ASE calculator path used for relaxations
    plain = teacher.label(slab)
    assert plain.atom_energy is None and plain.features == {}
    assert labels.energy == pytest.approx(plain.energy, abs=1e-4)
    close(labels.forces, plain.forces)


def test_features_invariant_and_equivariant(teacher, slab, slab_labels):
    labels = slab_labels
    moved, matrix = rotated(slab)
    other = full_label(teacher, moved)
    assert other.energy == pytest.approx(labels.energy, abs=1e-4)
    close(other.forces, labels.forces @ matrix.T)
    close(other.atom_energy, labels.atom_energy)
    close(other.features["node"], labels.features["node"])
    if "vector" in teacher.feature_shapes():
        vector = labels.features["vector"]
        assert np.abs(vector).max() > 1e-3  # not trivially zero
        close(other.features["vector"], np.einsum("ij,njc->nic", matrix, vector))


def test_predict_batch_equals_separate_labels(teacher, slab, other_slab, slab_labels):
    from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch

    structures = [slab, other_slab]
    batch = atomicdata_list_to_batch([AtomicData.from_ase(a, r_energy=False, r_forces=False, r_stress=False)
                                      for a in structures])
    output = teacher.predict(batch)
    labels = [slab_labels, full_label(teacher, other_slab)]
    n = sum(len(a) for a in structures)
    assert output.energy.shape == (2,) and output.forces.shape == (n, 3) and output.atom_energy.shape == (n,)
    close(output.energy.numpy(), [l.energy for l in labels], rel=1e-5)
    close(output.forces.numpy(), np.concatenate([l.forces for l in labels]), rel=2e-4)
    close(output.atom_energy.numpy(), np.concatenate([l.atom_energy for l in labels]))
    for name, shape in teacher.feature_shapes().items():
        assert output.features[name].shape == (n, *shape)
        close(output.features[name].numpy(), np.concatenate([l.features[name] for l in labels]), rel=2e-4)


def test_unknown_property_names_it_and_the_offer(teacher, slab):
    with pytest.raises(ValueError, match=r"cannot provide 'edge2node'.*offers: energy, forces, atom_energy, node"):
        teacher.label(slab, ["energy", "edge2node"])


def test_fairchem_matches_its_calculator_and_identity(fairchem_checkpoint, slab):
    from fairchem.core.calculate.ase_calculator import FAIRChemCalculator
    from fairchem.core.units.mlip_unit import load_predict_unit

    from augkd.teachers.fairchem import cpu_inference_settings

    teacher = load_teacher(f"fairchem:{fairchem_checkpoint}", {"task_name": "oc20"})
    assert teacher.identity.name == "tiny-esen" and teacher.identity.kind == "fairchem"
    assert teacher.identity.weights_sha256 == sha256_file(fairchem_checkpoint)
    assert teacher.feature_shapes() == {"node": (8,), "vector": (3, 8)}
    unit = load_predict_unit(str(fairchem_checkpoint), device="cpu", inference_settings=cpu_inference_settings())
    reference = slab.copy()
    reference.calc = FAIRChemCalculator(unit, task_name="oc20")
    labels = teacher.label(slab, ["energy", "forces", "node"])
    assert set(labels.features) == {"node"} and labels.atom_energy is None  # only what was asked for
    assert labels.energy == pytest.approx(reference.get_potential_energy(), abs=1e-4)
    close(labels.forces, reference.get_forces(apply_constraint=False))
    plain = teacher.label(slab)  # the calculator path
    assert plain.energy == pytest.approx(reference.get_potential_energy(), abs=1e-6)


def test_fairchem_bad_specs(tmp_path, fairchem_checkpoint):
    missing = tmp_path / "nope.pt"
    with pytest.raises(ConfigError, match=f"fairchem:{missing}.*no such checkpoint file"):
        load_teacher(f"fairchem:{missing}")
    with pytest.raises(ConfigError, match="needs a checkpoint path"):
        load_teacher("fairchem:")
    with pytest.raises(ConfigError, match="takes only task_name"):
        load_teacher(f"fairchem:{fairchem_checkpoint}", {"device": "cuda"})
    with pytest.raises(ConfigError, match="no task 'omol'"):
        load_teacher(f"fairchem:{fairchem_checkpoint}", {"task_name": "omol"})
