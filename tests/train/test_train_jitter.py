"""Online jitter in training: the pseudo-loss on displaced copies labelled by the online teacher."""

import csv

import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT

from augkd.config import compose
from augkd.errors import ConfigError
from augkd.models.checkpoint import load_model, save_model
from augkd.records import LabelledFrame, fixed_mask
from augkd.train.trainer import TrainConfig, Trainer
from conftest import cu_adslab
from models.model_helpers import tiny_model

NORM = 0.1


@pytest.fixture(scope="module")
def emt_slabs(tmp_path_factory):
    from augkd.io.dataset import DatasetWriter

    frames = []
    for index in range(8):
        atoms = cu_adslab(np.random.default_rng(index))
        probe = atoms.copy()
        probe.calc = EMT()
        frames.append(LabelledFrame(atoms, float(probe.get_potential_energy()), probe.get_forces(apply_constraint=False),
                                    {"sid": f"s{index}", "fid": 0, "origin": "dft"}))
    path = tmp_path_factory.mktemp("online") / "emt"
    writer = DatasetWriter(path, {"kind": "test", "shard_count": 1})
    writer.open()
    writer.write_shard(0, frames, {})
    writer.finalize(1, {})
    return path


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory):
    """A tiny gradient-force model as the online teacher (a labeller here: it needs no training)."""
    return save_model(tmp_path_factory.mktemp("teacher") / "teacher.pt",
                      tiny_model("painn-tiny-grad", dtype=torch.float32, seed=3, hidden_channels=24))


def config(data, teacher, *overrides, steps=6):
    values = compose("train", "default", [
        "batch_size=4", f"steps={steps}", f"eval_every={steps}", f"checkpoint_every={steps}", "optim.lr=1e-3",
        "model.name=painn-tiny", "teacher.mode=online", f"teacher.spec=ckpt:{teacher}", *overrides,
    ])
    values["data"]["train"] = [str(data)]
    values["model"]["overrides"] = {"hidden_channels": 16}
    return TrainConfig.from_dict(values)


def rows(run):
    with open(run / "train.csv") as handle:
        return list(csv.DictReader(handle))


def final_weights(run):
    model, _ = load_model(run / "checkpoints" / "final.pt")
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("mode", ["rattle", "adversarial"])
def test_online_jitter_adds_a_pseudo_loss_that_trains_the_student(emt_slabs, teacher_checkpoint, tmp_path, mode):
    torch.set_num_threads(1)
    runs = {}
    for name, overrides in {
        "plain": [],
        "weightless": [f"jitter.mode={mode}", f"jitter.norm={NORM}", "jitter.weight=0.0"],
        "jitter": [f"jitter.mode={mode}", f"jitter.norm={NORM}", "jitter.fraction=0.5"],
    }.items():
        runs[name] = tmp_path / name
        Trainer(config(emt_slabs, teacher_checkpoint, *overrides), runs[name]).fit(progress=False)
    log = rows(runs["jitter"])
    for row in log:
        assert float(row["loss_jitter"]) > 0
        assert float(row["loss"]) == pytest.approx(float(row["loss_base"]) + float(row["loss_jitter"]), rel=1e-5)
        if mode == "adversarial":
            assert float(row["jitter_fallbacks"]) == 0
    assert "loss_jitter" not in rows(runs["plain"])[0]
    # the pseudo-loss's gradient reaches the weights: weight 0 trains exactly as without jitter, weight 1 does not
    assert torch.equal(final_weights(runs["weightless"]), final_weights(runs["plain"]))
    assert not torch.allclose(final_weights(runs["jitter"]), final_weights(runs["plain"]))


def test_online_displaced_copies_move_free_atoms_exactly_norm_and_are_seeded_by_step(emt_slabs, teacher_checkpoint, tmp_path):
    trainer = Trainer(config(emt_slabs, teacher_checkpoint, "jitter.mode=rattle", f"jitter.norm={NORM}",
                             "jitter.fraction=0.5"), tmp_path / "run")
    from augkd.train.data import collate

    batch = collate([trainer.train_set[i] for i in range(4)]).batch
    moved, delta, _ = trainer.jitter.displaced_copy(batch, trainer.student, trainer.teacher, step=7)
    assert int(moved.natoms.numel()) == 2  # fraction 0.5 of 4 structures
    atoms = [trainer.train_set.frame(i).atoms for i in range(2)]
    fixed = np.concatenate([fixed_mask(a) | (a.get_tags() == 0) for a in atoms])
    distance = (moved.pos.double() - batch.pos[: moved.pos.shape[0]].double()).norm(dim=1).numpy()
    np.testing.assert_allclose(distance[~fixed], NORM, atol=1e-5)  # float32 positions
    assert (distance[fixed] == 0).all()
    np.testing.assert_allclose(delta.norm(dim=1).numpy()[~fixed], NORM, atol=1e-12)
    _, same, _ = trainer.jitter.displaced_copy(batch, trainer.student, trainer.teacher, step=7)
    _, other, _ = trainer.jitter.displaced_copy(batch, trainer.student, trainer.teacher, step=8)
    assert torch.equal(same, delta) and not torch.allclose(other, delta)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["teacher.mode=none", "jitter.mode=rattle"], r"jitter needs teacher.mode=online"),
        (["jitter.mode=shake"], r"jitter.mode 'shake' is not none, rattle or adversarial"),
        (["jitter.mode=rattle", "jitter.norm=2.0"], r"jitter norm 2.0 Å is above 1.0 Å"),
        (["jitter.mode=rattle", "jitter.norm=0"], r"jitter norm 0 must be > 0"),
        (["jitter.mode=rattle", "jitter.fraction=0"], r"jitter.fraction 0 must be in \(0, 1\]"),
        (["jitter.mode=adversarial", "jitter.attack_loss=v2v"], r"attack loss v2v needs the student's KD projection head"),
        (["jitter.mode=rattle", "+jitter.noise=1"], r"unknown jitter key\(s\) \['noise'\]"),
    ],
)
def test_bad_online_jitter_configs_are_refused(emt_slabs, teacher_checkpoint, overrides, message):
    with pytest.raises(ConfigError, match=message):
        config(emt_slabs, teacher_checkpoint, *overrides)
