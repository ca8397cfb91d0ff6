import numpy as np
import pytest
from ase.build import add_adsorbate, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms

from augkd.errors import ConfigError
from augkd.hashing import sha256_file
from augkd.teachers import Teacher, load_teacher


@pytest.fixture
def adslab():
    atoms = fcc111("Cu", (2, 2, 3), vacuum=8.0)
    add_adsorbate(atoms, "O", 1.6, "fcc")
    atoms.set_constraint(FixAtoms(indices=range(4)))
    atoms.rattle(0.05, seed=1)
    return atoms


def test_emt_labels_match_the_calculator_and_ignore_constraints(adslab):
    teacher = load_teacher("emt")
    assert isinstance(teacher, Teacher)
    labels = teacher.label(adslab)
    reference = adslab.copy()
    reference.calc = EMT()
    assert labels.energy == pytest.approx(reference.get_potential_energy())
    # unconstrained forces: fixed atoms keep theirs
    np.testing.assert_allclose(labels.forces, reference.get_forces(apply_constraint=False))
    assert np.abs(labels.forces[:4]).max() > 0
    assert teacher.elements >= {"Cu", "O", "Pt"}


def test_ase_import_path_teacher_with_kwargs(adslab):
    teacher = load_teacher("ase:ase.calculators.lj.LennardJones", {"sigma": 2.3, "epsilon": 0.1, "rc": 6.0})
    other = load_teacher("ase:ase.calculators.lj.LennardJones", {"sigma": 2.4, "epsilon": 0.1, "rc": 6.0})
    assert teacher.identity.kind == "ase" and teacher.identity.name == "lennardjones"
    assert teacher.identity.weights_sha256 != other.identity.weights_sha256
    assert teacher.label(adslab).energy != other.label(adslab).energy
    # the EMT import path is the EMT teacher, with its element list
    assert load_teacher("ase:ase.calculators.emt.EMT").identity == load_teacher("emt").identity


@pytest.mark.parametrize(
    "spec, kwargs, message",
    [
        ("nope", None, "unknown teacher 'nope'"),
        ("ase:os.path", None, "not an ASE Calculator"),
        ("ase:ase.calculators.lj.NoSuchCalc", None, "not an ASE Calculator"),
        ("ase:ase.calculators.singlepoint.SinglePointCalculator", {"energy": 1.0}, "rejected kwargs"),
        ("chgnet:9.9.9", None, "no such CHGNet version"),
        ("chgnet", {"x": 1}, "takes no kwargs"),
        ("sevennet:omat", None, "not shipped"),
    ],
)
def test_bad_teacher_specs(spec, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        load_teacher(spec, kwargs)


def test_chgnet_default_teacher_offline(adslab):
    teacher = load_teacher()  # the embedded default
    assert teacher.identity.name == "chgnet-0.3.0"
    assert teacher.identity.weights_sha256 == sha256_file(teacher.identity.checkpoint)
    labels = teacher.label(adslab)
    assert labels.forces.shape == (len(adslab), 3) and np.isfinite(labels.forces).all()
    # physically sane: the rattled structure is not at a minimum, and forces are not absurd
    assert 0.01 < np.abs(labels.forces).max() < 20
    assert -6 < labels.energy / len(adslab) < -1
    # deterministic
    assert teacher.label(adslab).energy == labels.energy


def test_sevennet_teacher_offline(adslab):
    pytest.importorskip("sevenn")
    teacher = load_teacher("sevennet")
    assert teacher.identity.name == "sevennet-7net-0"
    assert teacher.identity.weights_sha256 == sha256_file(teacher.identity.checkpoint)
    assert {"Cu", "O", "Pt", "H"} <= teacher.elements
    labels = teacher.label(adslab)
    assert np.isfinite(labels.forces).all() and -6 < labels.energy / len(adslab) < -1


def test_device_auto_is_cuda_only_where_the_process_sees_it_and_bad_names_are_one_line():
    import torch

    from augkd.teachers import resolve_device

    assert resolve_device("auto") == resolve_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    for bad in ("tpu", "gpu0", "cuda:x"):
        with pytest.raises(ConfigError, match=f"--device '{bad}'"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cuda:1: this process sees no CUDA device"):
            resolve_device("cuda:1")
    else:
        with pytest.raises(ConfigError, match="sees"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_checkpoint_teacher_loads_on_the_gpu_by_default(tmp_path):
    import torch

    from augkd.models import build_model
    from augkd.models.checkpoint import save_model

    path = save_model(tmp_path / "t.pt", build_model("painn-tiny"))
    assert load_teacher(f"ckpt:{path}").device.type == "cuda"
    assert load_teacher(f"ckpt:{path}", device="cpu").device == torch.device("cpu")
