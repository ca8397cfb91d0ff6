"""Jitter: per-atom displacement norms, fixed atoms, determinism, batching independence, the adversarial attack (a
trained student against a trained teacher), provenance of the rows and every refusal."""

import csv

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.constraints import FixAtoms

from augkd.errors import ConfigError
from augkd.generators.jitter import (
    DEFAULT_BATCH_SIZE,
    JitterConfig,
    Student,
    attack_gradient,
    batch_size_for,
    jitter_frames,
    load_student,
    prepare,
    row_identity,
)
from augkd.io.arrays import decode_array, encode_array
from augkd.models.checkpoint import save_model
from augkd.models.data import atoms_to_batch
from augkd.records import LabelledFrame, fixed_mask
from augkd.teachers import load_teacher
from conftest import cu_adslab
from models.model_helpers import tiny_model

NORM = 0.1


def labelled(atoms, index, stale=True):
    """A row as datasets hold it: EMT labels, provenance and (``stale``) a cached teacher energy of its own."""
    from ase.calculators.emt import EMT

    probe = atoms.copy()
    probe.calc = EMT()
    return LabelledFrame(
        atoms, float(probe.get_potential_energy()), probe.get_forces(apply_constraint=False),
        {"sid": f"s{index}", "fid": index % 3, "origin": "dft", **({"teacher_energy": 1.0} if stale else {})},
    )


def adslabs(count, start=0):
    return [labelled(cu_adslab(np.random.default_rng(start + i)), start + i) for i in range(count)]


def tags_only(rng):
    """Tags 0/1/2 but no FixAtoms: the tag-0 atoms are the fixed ones."""
    atoms = cu_adslab(rng)
    atoms.set_constraint()
    return atoms


def fixatoms_only(rng):
    """FixAtoms but every tag 0: only the FixAtoms atoms are fixed."""
    atoms = cu_adslab(rng)
    atoms.set_tags(0)
    return atoms


def expected_fixed(atoms):
    tags = atoms.get_tags()
    return fixed_mask(atoms) | ((tags == 0) & (tags != 0).any())


def moved(parent, copy):
    return np.linalg.norm(copy.atoms.positions - parent.atoms.positions, axis=1)


@pytest.fixture(scope="module")
def emt():
    return load_teacher("emt")


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """Untrained tiny models (float32 as trained ones): a direct-force student, a gradient-force ckpt teacher."""
    folder = tmp_path_factory.mktemp("tiny")
    student = save_model(folder / "student.pt", tiny_model("painn-tiny", dtype=torch.float32, seed=0))
    teacher = save_model(folder / "teacher.pt", tiny_model("painn-tiny-grad", dtype=torch.float32, seed=1,
                                                           hidden_channels=24))
    return student, teacher


def adversarial(student_path, **values):
    return JitterConfig(norm=NORM, mode="adversarial", student=str(student_path), **values)


# ---------------------------------------------------------------------------------------------------------------
# Displacement norms and fixed atoms
# ---------------------------------------------------------------------------------------------------------------
def check_norms(parents, out, copies):
    assert len(out) == copies * len(parents)
    for index, copy in enumerate(out):
        parent = parents[index // copies]
        distance = moved(parent, copy)
        fixed = expected_fixed(parent.atoms)
        assert fixed.any() and (~fixed).any()
        np.testing.assert_allclose(distance[~fixed], NORM, rtol=0, atol=1e-6)
        assert (copy.atoms.positions[fixed] == parent.atoms.positions[fixed]).all()  # exactly, not nearly
        assert (copy.atoms.get_tags() == parent.atoms.get_tags()).all()
        assert (fixed_mask(copy.atoms) == fixed_mask(parent.atoms)).all()


def mixed_parents():
    rng = np.random.default_rng(5)
    frames = adslabs(2)
    frames.append(labelled(tags_only(rng), 10))
    frames.append(labelled(fixatoms_only(rng), 11))
    return frames


def test_rattle_moves_every_free_atom_exactly_norm_and_fixed_atoms_not_at_all(emt):
    parents = mixed_parents()
    out, stats = jitter_frames(parents, JitterConfig(norm=NORM, teacher="emt", copies=3), emt, None, encode_array)
    check_norms(parents, out, 3)
    assert stats["rows_in"] == 4 and stats["rows_out"] == 12 and stats["skipped_no_free_atoms"] == 0
    assert not np.allclose(out[0].atoms.positions, out[1].atoms.positions)  # copies differ


@pytest.mark.parametrize("steps", [1, 3])
def test_adversarial_moves_every_free_atom_exactly_norm_and_fixed_atoms_not_at_all(emt, tiny_checkpoints, steps):
    student_path, teacher_path = tiny_checkpoints
    parents = mixed_parents()
    config = adversarial(student_path, teacher=f"ckpt:{teacher_path}", copies=2, steps=steps, step_size=0.05)
    context = prepare(config)
    out, stats = jitter_frames(parents, config, context.teacher, context.student, encode_array)
    check_norms(parents, out, 2)
    assert stats["teacher_differentiable"] and stats["fallback_directions"] == 0
    assert stats["attack_loss_start"] > 0
    # copy 1 starts at its rattle point: it is not copy 0 again
    assert not np.allclose(out[0].atoms.positions, out[1].atoms.positions)


def test_frames_without_free_atoms_are_skipped_and_counted(emt):
    frozen = cu_adslab(np.random.default_rng(0))
    frozen.set_constraint(FixAtoms(indices=range(len(frozen))))
    parents = [labelled(frozen, 0), *adslabs(1, start=1)]
    progress = []
    out, stats = jitter_frames(parents, JitterConfig(norm=NORM, teacher="emt", copies=2, batch_size=1), emt, None,
                               encode_array, progress.append)
    assert stats["skipped_no_free_atoms"] == 1 and len(out) == 2
    assert {c.data["parent_sid"] for c in out} == {"s1"}
    assert sum(progress) == 2


def test_rows_without_fixed_information_are_refused_unless_all_atoms_free(emt):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=1)
    parents = [*adslabs(1), labelled(atoms, 7)]
    with pytest.raises(ConfigError, match=r"row 1 \(sid 's7', fid 1\) has no fixed atoms and no tags.*all_atoms_free"):
        jitter_frames(parents, JitterConfig(norm=NORM, teacher="emt"), emt, None, encode_array)
    out, _ = jitter_frames(parents, JitterConfig(norm=NORM, teacher="emt", all_atoms_free=True), emt, None, encode_array)
    np.testing.assert_allclose(moved(parents[1], out[1]), NORM, atol=1e-6)  # every atom of the bulk moves
    check_norms(parents[:1], out[:1], 1)  # informed rows keep their fixed atoms


# ---------------------------------------------------------------------------------------------------------------
# Determinism, batching and sharding independence
# ---------------------------------------------------------------------------------------------------------------
def positions(frames):
    return np.stack([f.atoms.positions for f in frames])


def test_rattle_is_deterministic_and_independent_of_batching_and_sharding(emt):
    parents = adslabs(5)
    config = JitterConfig(norm=NORM, teacher="emt", copies=2, seed=3)
    assert config.batch_size is None and batch_size_for(emt) == DEFAULT_BATCH_SIZE["cpu"]  # ASE teacher: CPU
    out, _ = jitter_frames(parents, config, emt, None, encode_array)
    again, _ = jitter_frames(parents, JitterConfig(**{**config.to_dict(), "batch_size": 3}), emt, None, encode_array)
    assert (positions(out) == positions(again)).all()
    shard, _ = jitter_frames(parents[3:], config, emt, None, encode_array)  # the same rows in another shard
    assert (positions(shard) == positions(out[6:])).all()
    other_seed, _ = jitter_frames(parents, JitterConfig(norm=NORM, teacher="emt", copies=2, seed=4), emt, None,
                                  encode_array)
    assert not np.allclose(positions(other_seed), positions(out))
    # a jittered row jittered again is a new row: it gets new directions, not its parent's once more
    assert row_identity(out[0]) != row_identity(parents[0])


def test_adversarial_is_deterministic_and_independent_of_batching_and_sharding(tiny_checkpoints):
    student_path, teacher_path = tiny_checkpoints
    torch.set_num_threads(1)
    parents = adslabs(5)
    config = adversarial(student_path, teacher=f"ckpt:{teacher_path}", copies=2, seed=1, batch_size=10)
    context = prepare(config)
    out, _ = jitter_frames(parents, config, context.teacher, context.student, encode_array)
    same, _ = jitter_frames(parents, config, context.teacher, context.student, encode_array)
    assert (positions(out) == positions(same)).all()
    single = JitterConfig(**{**config.to_dict(), "batch_size": 1})
    one_by_one, _ = jitter_frames(parents, single, context.teacher, context.student, encode_array)
    np.testing.assert_allclose(positions(one_by_one), positions(out), rtol=0, atol=1e-6)
    shard, _ = jitter_frames(parents[2:], config, context.teacher, context.student, encode_array)
    np.testing.assert_allclose(positions(shard), positions(out[4:]), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Rows: labels and provenance
# ---------------------------------------------------------------------------------------------------------------
def test_rows_carry_teacher_labels_features_and_their_parent(tiny_checkpoints):
    _, teacher_path = tiny_checkpoints
    parents = adslabs(3)
    config = JitterConfig(norm=NORM, teacher=f"ckpt:{teacher_path}", copies=2, features=("node",), atom_energy=True,
                          feature_dtype="float32")
    teacher = prepare(config).teacher
    out, _ = jitter_frames(parents, config, teacher, None, encode_array)
    for index, row in enumerate(out):
        parent = parents[index // 2]
        assert row.data["origin"] == "rattle" and row.data["jitter_mode"] == "rattle"
        assert row.data["parent_sid"] == parent.data["sid"] == row.data["sid"]
        assert row.data["parent_fid"] == parent.data["fid"] == row.data["fid"]
        assert row.data["parent_origin"] == "dft" and row.data["copy"] == index % 2
        assert row.data["jitter_norm"] == NORM and row.data["teacher"] == teacher.identity.name
        labels = teacher.label(row.atoms, ["energy", "forces", "atom_energy", "node"])
        assert row.energy == pytest.approx(labels.energy, rel=1e-6)
        np.testing.assert_allclose(row.forces, labels.forces, rtol=1e-5, atol=1e-6)
        assert row.data["teacher_energy"] == pytest.approx(labels.energy, rel=1e-6)  # fresh, not the parent's 1.0
        np.testing.assert_allclose(decode_array(row.data["teacher_forces"]), labels.forces, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(decode_array(row.data["teacher_atom_energy"]), labels.atom_energy, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(decode_array(row.data["teacher_features"]["node"]), labels.features["node"],
                                   rtol=1e-5, atol=1e-6)


def test_rows_survive_a_dataset_round_trip_and_load_in_fairchem_and_training(tiny_checkpoints, tmp_path):
    from fairchem.core.datasets import AseDBDataset

    from augkd.io.dataset import read_frames
    from augkd.train.data import FrameDataset

    _, teacher_path = tiny_checkpoints
    config = JitterConfig(norm=NORM, teacher=f"ckpt:{teacher_path}", copies=2, features=("node",))
    parents = [labelled(cu_adslab(np.random.default_rng(i)), i, stale=False) for i in range(2)]
    parents[1].data.pop("origin")  # a parent without an origin of its own
    out, _ = jitter_frames(parents, config, prepare(config).teacher, None, encode_array)
    path = write_dataset(tmp_path / "jittered", out)
    back = list(read_frames(path))
    assert [row.data for row in back] == [row.data for row in out]
    np.testing.assert_array_equal(positions(back), positions(out))
    fairchem = AseDBDataset({"src": str(path / "shards"), "a2g_args": {"r_energy": True, "r_forces": True}})
    training = FrameDataset([path])
    for index, row in enumerate(out):
        assert float(fairchem[index].energy) == pytest.approx(row.energy, rel=1e-6)
        np.testing.assert_array_equal(fairchem[index].fixed.numpy().astype(bool), fixed_mask(row.atoms))
        sample = training[index]
        assert sample.origin == "rattle" and sample.teacher["features"]["node"].shape == (len(row.atoms), 24)


def test_rows_without_cached_outputs_drop_the_parents_stale_ones(emt):
    out, _ = jitter_frames(adslabs(1), JitterConfig(norm=NORM, teacher="emt"), emt, None, encode_array)
    assert not any(key.startswith("teacher_") for key in out[0].data)
    probe = out[0].atoms.copy()
    from ase.calculators.emt import EMT

    probe.calc = EMT()
    assert out[0].energy == pytest.approx(probe.get_potential_energy(), abs=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# The attack
# ---------------------------------------------------------------------------------------------------------------
def attack_loss_at(delta, batch, free, student, teacher):
    _, loss = attack_gradient(batch, delta, free, student, teacher, "forces")
    return loss


def test_attack_gradient_flows_through_a_differentiable_teacher(tiny_checkpoints):
    """∂L/∂δ matches central differences of L, which only holds if the teacher's forces are differentiated too."""
    student_path, teacher_path = tiny_checkpoints
    student = load_student(str(student_path))
    student.model.double()
    teacher = load_teacher(f"ckpt:{teacher_path}")
    teacher.model.double()
    teacher.dtype = torch.float64
    atoms = cu_adslab(np.random.default_rng(0))
    batch = atoms_to_batch([atoms], dtype=torch.float64)
    free = torch.from_numpy(~expected_fixed(atoms))
    delta = torch.zeros(len(atoms), 3, dtype=torch.float64)
    gradient, _ = attack_gradient(batch, delta, free, student, teacher, "forces")
    student_only, _ = attack_gradient(batch, delta, free, student, _Constants(teacher), "forces")
    step = 1e-5
    for atom, axis in [(5, 0), (9, 2), (12, 1)]:
        shift = delta.clone()
        shift[atom, axis] = step
        numeric = (attack_loss_at(shift, batch, free, student, teacher) - attack_loss_at(-shift, batch, free, student, teacher)) / (2 * step)
        assert gradient[atom, axis].item() == pytest.approx(numeric, rel=1e-4, abs=1e-6)
    assert not torch.allclose(gradient, student_only, rtol=1e-2)  # the teacher's part is not negligible


@pytest.mark.parametrize("kind", ["forces", "vanilla1", "vanilla2"])
def test_attack_loss_of_a_batch_is_the_sum_of_each_structures_own(tiny_checkpoints, kind):
    """So that a structure's ascent step never depends on what else is in its batch."""
    student_path, teacher_path = tiny_checkpoints
    student = load_student(str(student_path))
    teacher = load_teacher(f"ckpt:{teacher_path}")
    structures = [cu_adslab(np.random.default_rng(0)), tags_only(np.random.default_rng(1))]
    structures[1] = structures[1][:9]  # fewer free atoms in the second: per-structure means differ from the pooled one

    def loss(atoms_list):
        batch = atoms_to_batch(atoms_list, dtype=torch.float64)
        free = torch.from_numpy(np.concatenate([~expected_fixed(a) for a in atoms_list]))
        return attack_gradient(batch, torch.zeros(len(free), 3, dtype=torch.float64), free, student, teacher, kind)[1]

    assert loss(structures) == pytest.approx(loss(structures[:1]) + loss(structures[1:]), rel=1e-5)


class _Constants:
    """The same teacher, seen as non-differentiable."""

    differentiable = False

    def __init__(self, teacher):
        self._teacher = teacher
        self.identity = teacher.identity
        self.elements = teacher.elements

    def label_batch(self, atoms_list, properties):
        return self._teacher.label_batch(atoms_list, properties)


def test_degenerate_gradients_fall_back_to_the_rattle_direction(tiny_checkpoints):
    """An atom beyond every cutoff feels nothing: its gradient is 0, so it takes its seeded rattle direction."""
    student_path, teacher_path = tiny_checkpoints
    atoms = cu_adslab(np.random.default_rng(0))
    atoms.cell[2, 2] += 30.0
    atoms += Atoms("Cu", positions=[atoms.positions.mean(0) + [0, 0, 20.0]], tags=[2])
    parents = [labelled(atoms, 0)]
    config = adversarial(student_path, teacher=f"ckpt:{teacher_path}", seed=2)
    context = prepare(config)
    out, stats = jitter_frames(parents, config, context.teacher, context.student, encode_array)
    assert stats["fallback_directions"] == 1
    rattled, _ = jitter_frames(parents, JitterConfig(norm=NORM, teacher=f"ckpt:{teacher_path}", seed=2),
                               context.teacher, None, encode_array)
    lone = len(atoms) - 1
    np.testing.assert_allclose(out[0].atoms.positions[lone], rattled[0].atoms.positions[lone], atol=1e-12)
    assert not np.allclose(out[0].atoms.positions[:lone], rattled[0].atoms.positions[:lone])


def write_dataset(path, frames):
    from augkd.io.dataset import DatasetWriter

    writer = DatasetWriter(path, {"kind": "test", "shard_count": 1})
    writer.open()
    writer.write_shard(0, frames, {})
    writer.finalize(1, {})
    return path


def train(data, run, steps, lr, **model_overrides):
    from augkd.config import compose
    from augkd.train.trainer import TrainConfig, Trainer

    values = compose("train", "default", ["batch_size=8", f"steps={steps}", f"eval_every={steps}",
                                          f"checkpoint_every={steps}", f"optim.lr={lr}", "optim.ema_decay=0.9",
                                          "model.name=painn-tiny"])
    values["data"]["train"] = [str(data)]
    values["model"]["overrides"] = model_overrides
    Trainer(TrainConfig.from_dict(values), run).fit(progress=False)
    return run / "checkpoints" / "final.pt"


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory):
    """A teacher and a smaller student, both trained briefly on EMT-labelled Cu/O slabs."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("trained")
    rng = np.random.default_rng(0)
    frames = []
    for index in range(24):
        atoms = cu_adslab(rng)
        atoms.positions[expected_fixed(atoms) == 0] += rng.normal(scale=0.08, size=(int((~expected_fixed(atoms)).sum()), 3))
        frames.append(labelled(atoms, index, stale=False))
    data = write_dataset(folder / "emt", frames)
    teacher = train(data, folder / "teacher", 200, 3e-3, hidden_channels=32, direct_forces=False)
    student = train(data, folder / "student", 120, 3e-3, hidden_channels=16, num_layers=1)
    with open(folder / "student" / "train.csv") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])  # the student did learn
    return teacher, student, frames


def discrepancy(student: Student, teacher, frames):
    """Per structure: mean over free atoms of |F_student − F_teacher| (eV/Å), computed apart from the attack."""
    atoms_list = [f.atoms for f in frames]
    with torch.enable_grad():
        out = student.model(atoms_to_batch(atoms_list, dtype=student.dtype))
    predicted = out.forces.detach().double().numpy()
    target = np.concatenate([label.forces for label in teacher.label_batch(atoms_list, ["energy", "forces"])])
    error = np.linalg.norm(predicted - target, axis=1)
    ends = np.cumsum([0, *(len(a) for a in atoms_list)])
    return np.array([error[s:e][~expected_fixed(a)].mean() for s, e, a in zip(ends[:-1], ends[1:], atoms_list)])


@pytest.mark.slow
@pytest.mark.parametrize("teacher_kind", ["ckpt", "emt"])
def test_adversarial_step_beats_a_random_step_of_the_same_norm(trained_pair, teacher_kind):
    """A trained student against a trained ``ckpt:`` teacher (gradient through both) and against EMT, the data's
    labeller (not differentiable: gradient through the student only, a weaker attack, so a weaker claim)."""
    teacher_path, student_path, _ = trained_pair
    parents = adslabs(24, start=100)
    spec = f"ckpt:{teacher_path}" if teacher_kind == "ckpt" else "emt"
    config = adversarial(student_path, teacher=spec)
    context = prepare(config)
    attacked, _ = jitter_frames(parents, config, context.teacher, context.student, encode_array)
    rattled, _ = jitter_frames(parents, JitterConfig(norm=NORM, teacher=spec, copies=4), context.teacher, None,
                               encode_array)
    start = discrepancy(context.student, context.teacher, parents)
    after_attack = discrepancy(context.student, context.teacher, attacked) - start
    after_rattle = (discrepancy(context.student, context.teacher, rattled).reshape(-1, 4) - start[:, None]).mean(1)
    wins = (after_attack > after_rattle).mean()
    print(f"{teacher_kind}: start {start.mean():.4f} eV/Å, attack +{after_attack.mean():.4f}, "
          f"rattle +{after_rattle.mean():.4f}, attack wins on {wins:.0%}")
    assert after_attack.mean() > after_rattle.mean() > 0
    if teacher_kind == "ckpt":
        assert after_attack.mean() > 2 * after_rattle.mean() and wins >= 0.75


# ---------------------------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"norm": 0}, r"jitter norm 0 must be > 0 Å"),
        ({"norm": -0.1}, r"jitter norm -0.1 must be > 0 Å"),
        ({"norm": float("nan")}, r"jitter norm nan must be > 0 Å"),
        ({"norm": 1.5}, r"jitter norm 1.5 Å is above 1.0 Å .*--force-large-norm"),
        ({"norm": 0.1, "mode": "shake"}, r"unknown jitter mode 'shake' \(choose rattle or adversarial\)"),
        ({"norm": 0.1, "mode": "adversarial"}, r"adversarial needs a student checkpoint \(--student CKPT\)"),
        ({"norm": 0.1, "copies": 0}, r"jitter copies 0 must be an integer ≥ 1"),
        ({"norm": 0.1, "mode": "adversarial", "student": "s.pt", "steps": 0}, r"jitter steps 0 must be"),
        ({"norm": 0.1, "mode": "adversarial", "student": "s.pt", "step_size": -1.0}, r"step size -1.0 must be > 0"),
        ({"norm": 0.1, "mode": "adversarial", "student": "s.pt", "attack_loss": "n2n"},
         r"attack loss n2n needs the student's KD projection head"),
        ({"norm": 0.1, "mode": "adversarial", "student": "s.pt", "attack_loss": "l2"}, r"unknown attack loss 'l2'"),
        ({"norm": 0.1, "student": "s.pt", "steps": 2}, r"rattle takes no student, steps"),
        ({"norm": 0.1, "feature_dtype": "int8"}, r"feature dtype 'int8'"),
        ({"norm": 0.1, "batch_size": 0}, r"jitter batch_size 0 must be"),
    ],
)
def test_bad_configs_are_refused_with_one_line(values, message):
    with pytest.raises(ConfigError, match=message) as error:
        JitterConfig(**values)
    assert "\n" not in str(error.value)


def test_large_norm_only_when_forced():
    assert JitterConfig(norm=1.5, force_large_norm=True).norm == 1.5
    assert JitterConfig.from_dict(JitterConfig(norm=0.2, features=["node"]).to_dict()) == JitterConfig(norm=0.2, features=("node",))
    with pytest.raises(ConfigError, match=r"unknown jitter config key\(s\) \['noise'\]"):
        JitterConfig.from_dict({"norm": 0.1, "noise": 1})


def test_elements_the_student_cannot_take_are_refused(tiny_checkpoints):
    _, teacher_path = tiny_checkpoints
    model = tiny_model("painn-tiny", dtype=torch.float32)
    model.embedding = torch.nn.Embedding(20, model.embedding.embedding_dim)  # a model that embeds H..Ca only
    student = Student(model.eval(), "painn-tiny (Z ≤ 19)")  # not a registry preset: used live, not from a file
    config = adversarial("unused.pt", teacher=f"ckpt:{teacher_path}")
    teacher = load_teacher(f"ckpt:{teacher_path}")
    with pytest.raises(ConfigError, match=r"student painn-tiny \(Z ≤ 19\) cannot take element\(s\) Cu \(Z=29\); it embeds Z 1..19"):
        jitter_frames(adslabs(1), config, teacher, student, encode_array)
    ghost = cu_adslab(np.random.default_rng(0))
    ghost.numbers[-1] = 0  # a dummy atom 'X': no model was trained on it
    real = load_student(str(tiny_checkpoints[0]))
    with pytest.raises(ConfigError, match=r"cannot take element\(s\) X \(Z=0\)"):
        jitter_frames([labelled_plain(ghost)], config, teacher, real, encode_array)


def labelled_plain(atoms):
    return LabelledFrame(atoms, 0.0, np.zeros((len(atoms), 3)), {"sid": "x", "fid": 0})


def test_elements_the_teacher_cannot_label_and_missing_features_are_refused(emt):
    atoms = cu_adslab(np.random.default_rng(0))
    atoms.numbers[-1] = 92  # U: not in EMT's table
    with pytest.raises(ConfigError, match=r"teacher emt cannot label element\(s\) U"):
        jitter_frames([labelled_plain(atoms)], JitterConfig(norm=NORM, teacher="emt"), emt, None, encode_array)
    with pytest.raises(ConfigError, match=r"teacher emt cannot provide 'node'"):
        jitter_frames(adslabs(1), JitterConfig(norm=NORM, teacher="emt", features=("node",)), emt, None, encode_array)
    with pytest.raises(ConfigError, match=r"teacher emt cannot provide 'atom_energy'"):
        jitter_frames(adslabs(1), JitterConfig(norm=NORM, teacher="emt", atom_energy=True), emt, None, encode_array)


def test_missing_student_checkpoint_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"no model checkpoint at .*nowhere.pt"):
        prepare(adversarial(tmp_path / "nowhere.pt", teacher="emt"))


# ---------------------------------------------------------------------------------------------------------------
# Pretrained teachers differentiated: CHGNet (the default teacher) and SevenNet-0
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("spec", ["chgnet", "sevennet"])
def test_differentiable_predict_matches_labels_and_finite_differences(spec):
    if spec == "sevennet":
        pytest.importorskip("sevenn")
    teacher = load_teacher(spec)
    assert teacher.differentiable
    atoms = [cu_adslab(np.random.default_rng(i)) for i in range(2)]
    plain = teacher.predict(atoms_to_batch(atoms, dtype=torch.float64))
    batch = atoms_to_batch(atoms, dtype=torch.float64)
    base = batch.pos.detach().clone()
    delta = torch.zeros_like(base, requires_grad=True)
    batch.pos = base + delta
    output = teacher.predict(batch, differentiable=True)
    # the same values (SevenNet's force backward with create_graph may round differently in the last bits)
    torch.testing.assert_close(output.forces.detach().cpu(), plain.forces, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(output.energy.detach().cpu(), plain.energy, rtol=1e-6, atol=1e-5)
    weights = torch.from_numpy(np.random.default_rng(0).normal(size=tuple(output.forces.shape))).float()
    (gradient,) = torch.autograd.grad((output.forces * weights).sum(), delta)

    def weighted_forces(shift):
        moved = atoms_to_batch(atoms, dtype=torch.float64)
        moved.pos = base + shift
        return float((teacher.predict(moved).forces.double() * weights.double()).sum())

    def central_difference(atom, axis, step):
        shift = torch.zeros_like(base)
        shift[atom, axis] = step
        return (weighted_forces(shift) - weighted_forces(-shift)) / (2 * step)

    for atom, axis in [(12, 2), (20, 1)]:  # the O adsorbate (strongly curved), a Cu of the second slab
        # Richardson-extrapolated: float32 models need steps large enough to beat rounding, the O's curvature small
        numeric = (4 * central_difference(atom, axis, 1e-3) - central_difference(atom, axis, 2e-3)) / 3
        assert gradient[atom, axis].item() == pytest.approx(numeric, rel=1e-2, abs=1e-2)
