"""The mixer inside the trainer: weighted losses as logged, per-epoch realised α, exact resume, partial caches, DDP
(the mixture flags of `augkd train` end to end: tests/cli/test_train_cli.py)."""

import csv
import json

import pytest
import torch

from augkd.config import compose
from augkd.distributed.jobs import LabelJob
from augkd.generators.label import LabelConfig
from augkd.mixers import origin_weights
from augkd.train.trainer import TrainConfig, Trainer
from conftest import run_job
from mixer_helpers import emt_dataset

STUDENT = {"hidden_channels": 16, "num_layers": 2}


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    return emt_dataset(root / "dft", 10, "dft", seed=1), emt_dataset(root / "syn", 5, "synthetic", seed=2)



def config(dft, syn, *overrides, **sections):
    values = compose("train", "default", ["batch_size=4", "checkpoint_every=5", "optim.lr=1e-3",
                                          "model.name=painn-tiny", *overrides])
    values["data"].update(train=[str(dft)], synthetic=[str(syn)])
    values["model"]["overrides"] = dict(STUDENT)
    for section, update in sections.items():
        values[section].update(update)
    return TrainConfig.from_dict(values)


def read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


class Recorder:
    """Wraps a trainer's sampler.next_batch to keep every batch it hands out."""

    def __init__(self, trainer):
        self.batches = []
        inner = trainer.sampler.next_batch

        def next_batch():
            batch = inner()
            self.batches.append(batch)
            return batch

        trainer.sampler.next_batch = next_batch


def test_logged_losses_are_the_origin_weighted_means(two_sources, tmp_path, one_thread):
    """loss_energy = Σ_k n_k·w_k·L_E,k / B and loss_forces = Σ_k m_k·w_k·L_F,k / M over the batch (n_k systems and
    m_k free atoms of origin k), from the per-origin unweighted losses the same rows log."""
    dft, syn = two_sources
    r = 0.3
    trainer = Trainer(config(dft, syn, "steps=8", mixer={"alpha_target": 0.5, "r_sdft": r}), tmp_path / "run")
    recorder = Recorder(trainer)
    trainer.fit(progress=False)
    rows = read_csv(tmp_path / "run" / "train.csv")
    origins = ["dft"] * 10 + ["synthetic"] * 5
    free = [int((~trainer.train_set.frame(i).fixed).sum()) for i in range(15)]
    mixed = 0
    for row, batch in zip(rows, recorder.batches):
        batch_origins = [origins[i] for i in batch]
        w = origin_weights(batch_origins, {"synthetic": r}).tolist()
        weight = {o: w[batch_origins.index(o)] for o in set(batch_origins)}
        n = {o: batch_origins.count(o) for o in weight}
        m = {o: sum(free[i] for i in batch if origins[i] == o) for o in weight}
        energy = sum(n[o] * weight[o] * float(row[f"loss_energy_{o}"]) for o in weight) / len(batch)
        forces = sum(m[o] * weight[o] * float(row[f"loss_forces_{o}"]) for o in weight) / sum(m.values())
        assert float(row["loss_energy"]) == pytest.approx(energy, rel=1e-5)
        assert float(row["loss_forces"]) == pytest.approx(forces, rel=1e-5)
        for o in {"dft", "synthetic"} - set(weight):
            assert row[f"loss_energy_{o}"] == ""
        mixed += len(weight) == 2
    assert mixed >= 3  # the check had mixed batches to bite on


def test_epochs_log_realised_alpha_and_resume_reproduces_the_order(two_sources, tmp_path, one_thread):
    dft, syn = two_sources
    cfg = dict(mixer={"alpha_target": 0.5, "r_sdft": 0.3, "epoch_length": 12})
    straight = Trainer(config(dft, syn, "steps=14", **cfg), tmp_path / "straight")
    recorded = Recorder(straight)
    straight.fit(progress=False)
    first = Trainer(config(dft, syn, "steps=14", **cfg), tmp_path / "resumed")
    part = Recorder(first)
    # stops inside epoch 1 (epochs: 3 batches of 4)
    first.fit(progress=False, callbacks=[lambda trainer, log: trainer.step == 5])
    del first
    resumed = Trainer(config(dft, syn, "steps=14", **cfg), tmp_path / "resumed")
    assert resumed.step == 5
    rest = Recorder(resumed)
    resumed.fit(progress=False)
    assert part.batches + rest.batches == recorded.batches
    for a, b in zip(straight.student.state_dict().values(), resumed.student.state_dict().values()):
        assert torch.equal(a, b)
    epochs = read_csv(tmp_path / "straight" / "epochs.csv")
    assert read_csv(tmp_path / "resumed" / "epochs.csv") == epochs
    assert [(int(e["epoch"]), int(e["complete"]), int(e["draws"])) for e in epochs] == [
        (0, 1, 12), (1, 1, 12), (2, 1, 12), (3, 1, 12), (4, 0, 8)]
    # realised α: the draws of each origin, as recorded batch by batch
    syn_per_epoch = [sum(i >= 10 for b in recorded.batches[3 * e : 3 * e + 3] for i in b) for e in range(5)]
    assert [int(e["draws_synthetic"]) for e in epochs] == syn_per_epoch
    assert [float(e["alpha_synthetic"]) for e in epochs] == pytest.approx(
        [s / int(e["draws"]) for s, e in zip(syn_per_epoch, epochs)], abs=1e-6)
    assert all(float(e["alpha_target_synthetic"]) == 0.5 for e in epochs)
    assert json.loads((tmp_path / "straight" / "mixture.json").read_text())["sources"][1]["weight_ratio"] == 0.3


def test_unit_ratio_leaves_training_unweighted(two_sources, tmp_path, one_thread):
    """r = 1 is exactly the unweighted loss (no weights are even built), whatever the mixture."""
    dft, syn = two_sources
    a = Trainer(config(dft, syn, "steps=3", mixer={"alpha_target": 0.5}), tmp_path / "a")
    assert a.mixture.weights(["dft", "synthetic"]) is None
    b = Trainer(config(dft, syn, "steps=3", mixer={"alpha_target": 0.5, "r_sdft": 0.3}), tmp_path / "b")
    a.fit(progress=False)
    b.fit(progress=False)
    loss_a = [float(r["loss"]) for r in read_csv(tmp_path / "a" / "train.csv")]
    loss_b = [float(r["loss"]) for r in read_csv(tmp_path / "b" / "train.csv")]
    assert loss_a[0] != loss_b[0]  # same batch, same weights at step 1: only the origin weights differ


@pytest.fixture(scope="module")
def labelled_synthetic(two_sources, tmp_path_factory):
    """The synthetic source with cached teacher outputs (an untrained PaiNN teacher: wiring, not quality)."""
    from augkd.models.checkpoint import save_model
    from augkd.models.registry import build_model

    root = tmp_path_factory.mktemp("labelled")
    torch.manual_seed(0)
    teacher = save_model(root / "teacher.pt", build_model("painn-tiny", hidden_channels=24, num_layers=2))
    out = root / "syn-labelled"
    config = LabelConfig(teacher=f"ckpt:{teacher}", teacher_kwargs={}, features=("node",), atom_energy=True,
                         feature_dtype="float32")
    run_job(LabelJob(two_sources[1], config), out)
    return teacher, out


@pytest.mark.parametrize("loss", ["n2n", "vanilla1", "vanilla2"])
def test_kd_covers_cached_rows_or_asks_the_online_teacher(two_sources, labelled_synthetic, tmp_path, loss, one_thread):
    dft, _ = two_sources
    teacher, syn = labelled_synthetic
    kd = {"losses": [{"name": loss, "lambda": 1.0}], "auto_lambda": None}
    runs = {}
    for name, teacher_cfg in {
        "skip": {"mode": "cached", "uncached": "skip", "spec": None},
        "fill": {"mode": "cached", "uncached": "online", "spec": f"ckpt:{teacher}"},
        "online": {"mode": "online", "spec": f"ckpt:{teacher}"},
    }.items():
        trainer = Trainer(config(dft, syn, "steps=4", "optim.lr=0", mixer={"alpha_target": 0.5, "r_sdft": 0.5},
                                 teacher=teacher_cfg, kd=kd), tmp_path / name)
        recorder = Recorder(trainer)
        trainer.fit(progress=False)
        runs[name] = ([r[f"kd_{loss}"] for r in read_csv(tmp_path / name / "train.csv")], recorder.batches)
    batches = runs["skip"][1]
    assert runs["fill"][1] == runs["online"][1] == batches
    # cached only: KD over the synthetic rows (blank for a batch without any), so it differs from online
    for value, batch in zip(runs["skip"][0], batches):
        assert (value == "") == all(i < 10 for i in batch)
    # cached + online teacher for the DFT rows: the same targets as running the teacher on every row
    assert [float(v) for v in runs["fill"][0]] == pytest.approx([float(v) for v in runs["online"][0]], rel=1e-4)
    assert any(v != "" and float(v) != pytest.approx(float(f), rel=1e-3)
               for v, f in zip(runs["skip"][0], runs["fill"][0]))


@pytest.mark.slow
def test_ddp_ranks_train_disjoint_shares_of_the_mixture(two_sources, tmp_path):
    """Two gloo ranks under torchrun: epochs.csv counts both ranks' draws, which are the one-process epoch's."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    dft, syn = two_sources
    run = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
        "-m", "augkd.cli", "train", "--data", str(dft), "--synthetic", str(syn), "--alpha-target", "0.5",
        "--r-sdft", "0.3", "--out", str(run), "--model", "painn-tiny", "--steps", "5", "--batch-size", "2",
        "--quiet", "mixer.epoch_length=9", "+model.overrides.hidden_channels=16", "+model.overrides.num_layers=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # 9 draws → 4 per rank (one dropped): batches of 2, 2 per epoch; 5 steps = epochs 0, 1 and half of 2
    epochs = read_csv(run / "epochs.csv")
    assert [(int(e["epoch"]), int(e["complete"]), int(e["draws"])) for e in epochs] == [(0, 1, 8), (1, 1, 8), (2, 0, 4)]
    sampler = Trainer(config(dft, syn, "steps=5", "batch_size=2", mixer={"alpha_target": 0.5, "r_sdft": 0.3,
                                                                         "epoch_length": 9}), tmp_path / "x").sampler
    for row in epochs:
        sources, _ = sampler.epoch_draws(int(row["epoch"]))
        drawn = sources[: int(row["draws"])]
        assert int(row["draws_synthetic"]) == int((drawn == 1).sum())
