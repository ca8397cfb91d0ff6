"""Model checkpoints, the registry's configs, and the ``ckpt:`` teacher built on them."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.optimize import BFGS
from conftest import cu_adslab
from model_helpers import rattled_ethanol, run_model, tiny_model

from augkd.errors import ConfigError
from augkd.hashing import sha256_file
from augkd.models import MODEL_NAMES, build_model, load_model, save_model
from augkd.teachers import Teacher, load_teacher

CONFIGS = Path(__file__).parents[2] / "configs" / "model"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_yaml_configs_mirror_the_presets(name):
    settings = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert settings.pop("name") == name
    assert settings == build_model(name).config


def test_unknown_model_and_option_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown model 'gemnet'.*painn-small"):
        build_model("gemnet")
    with pytest.raises(ConfigError, match="no option hidden"):
        build_model("painn-tiny", hidden=3)
    with pytest.raises(ConfigError, match="feature_layer 'U9'"):
        build_model("painn-tiny", feature_layer="U9")


@pytest.mark.parametrize("name", ["schnet-tiny", "painn-tiny"])
def test_round_trip_gives_the_same_outputs(name, tmp_path):
    model = tiny_model(name, feature_layer={"schnet-tiny": "I1", "painn-tiny": "M2"}[name])
    path = save_model(tmp_path / "model.pt", model, extra={"step": 12, "heads": {"w": torch.ones(2)}})
    loaded, extra = load_model(path, expect=name)
    assert loaded.name == name and loaded.config == model.config and not loaded.training
    assert extra["step"] == 12 and torch.equal(extra["heads"]["w"], torch.ones(2))
    atoms = [rattled_ethanol()]
    before, after = run_model(model, atoms), run_model(loaded, atoms)
    assert torch.equal(before.energy, after.energy) and torch.equal(before.forces, after.forces)
    assert torch.equal(before.features["node"], after.features["node"])
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind


def test_wrong_model_and_foreign_files_are_refused(tmp_path):
    path = save_model(tmp_path / "student.pt", build_model("painn-tiny"))
    with pytest.raises(ConfigError, match="holds model 'painn-tiny', expected 'schnet-tiny'"):
        load_model(path, expect="schnet-tiny")
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": 1}, foreign)
    with pytest.raises(ConfigError, match="foreign.pt is not an augkd model checkpoint"):
        load_model(foreign)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="junk.pt is not an augkd model checkpoint"):
        load_model(junk)
    with pytest.raises(ConfigError, match="no model checkpoint at"):
        load_model(tmp_path / "missing.pt")


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    model = tiny_model("painn-tiny", dtype=torch.float32)
    return save_model(tmp_path_factory.mktemp("teacher") / "teacher.pt", model)


def test_checkpoint_teacher_labels_match_the_model(teacher_path):
    teacher = load_teacher(f"ckpt:{teacher_path}")
    assert isinstance(teacher, Teacher)
    assert teacher.identity.name == "painn-tiny-teacher" and teacher.identity.kind == "augkd"
    assert teacher.identity.weights_sha256 == sha256_file(teacher_path) and teacher.elements is None
    assert teacher.feature_shapes() == {"node": (32,), "vector": (3, 32)}
    atoms = cu_adslab(np.random.default_rng(0))
    labels = teacher.label(atoms, ["energy", "forces", "atom_energy", "node", "vector"])
    model, _ = load_model(teacher_path)
    out = run_model(model, [atoms])
    assert labels.energy == pytest.approx(float(out.energy.detach()[0]), rel=1e-6)
    np.testing.assert_allclose(labels.forces, out.forces.detach().numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(labels.atom_energy, out.atom_energy.detach().numpy(), rtol=1e-5, atol=1e-7)
    assert labels.features["vector"].shape == (len(atoms), 3, 32)
    np.testing.assert_allclose(labels.features["node"], out.features["node"].detach().numpy(), rtol=1e-5, atol=1e-6)
    assert teacher.label(atoms).atom_energy is None and teacher.label(atoms).features == {}
    with pytest.raises(ConfigError, match="cannot provide 'edge'"):
        teacher.label(atoms, ["energy", "edge"])


def test_checkpoint_teacher_predicts_batches_without_autograd(teacher_path, tmp_path):
    from augkd.models.data import atoms_to_batch
    from augkd.teachers.checkpoint import CheckpointTeacher

    path = save_model(tmp_path / "grad.pt", tiny_model("schnet-tiny", dtype=torch.float32))
    for teacher in (CheckpointTeacher(teacher_path), CheckpointTeacher(path)):
        out = teacher.predict(atoms_to_batch([rattled_ethanol(), cu_adslab(np.random.default_rng(1))]))
        assert out.energy.shape == (2,) and not out.forces.requires_grad and not out.energy.requires_grad
        assert not out.features["node"].requires_grad


def test_checkpoint_teacher_drives_ase_bfgs(teacher_path):
    teacher = load_teacher(f"ckpt:{teacher_path}")
    atoms = cu_adslab(np.random.default_rng(2))
    atoms.calc = teacher.calculator()
    start = atoms.positions.copy()
    optimizer = BFGS(atoms, logfile=None)
    optimizer.run(fmax=1e-4, steps=4)
    assert optimizer.nsteps == 4 and np.isfinite(atoms.get_potential_energy())
    moved = np.linalg.norm(atoms.positions - start, axis=1)
    fixed = atoms.constraints[0].index
    assert moved[fixed].max() == 0 and moved.max() > 0  # BFGS moved the free atoms with the teacher's forces
