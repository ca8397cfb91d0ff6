"""augkd train (and evaluate) as a user drives them: flags applied to the config, config files, fine-tuning, extending
a run, devices, resolved λ, threads, mixture flags, and bad input as one line on stderr with exit status 2."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from augkd.cli import main
from conftest import small_generate_args, train_config
from mixers.mixer_helpers import emt_dataset, source_datasets

TINY = ["--model", "painn-tiny", "--batch-size", "2", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return emt_dataset(tmp_path_factory.mktemp("ergo") / "dft", rows=6, origin="dft")


@pytest.fixture
def emt_data(small_d1m):
    return small_d1m(systems=8, shards=2)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    return source_datasets(tmp_path_factory.mktemp("sources"))


def steps_logged(run: Path) -> list[int]:
    with open(run / "train.csv") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


def read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_train_flags_give_the_config_of_the_stage_tests(data, tmp_path, monkeypatch):
    """The stage tests train through ``Trainer(train_config(...))``; the flags they stand for give the same config."""
    import augkd.train.trainer

    made = []

    class Recorded:
        def __init__(self, config, run_dir):
            made.append(config)

        def fit(self, progress=True):
            return {}

    monkeypatch.setattr(augkd.train.trainer, "Trainer", Recorded)
    assert main(["train", "--data", str(data), "--steps", "2", "--lr", "3e-3", "--out", str(tmp_path / "r"), *TINY,
                 "+model.overrides.direct_forces=false"]) == 0
    assert main(["train", "--source", f"dft={data}:0.8", "--source", f"rattle={data}:0.2", "--out",
                 str(tmp_path / "s"), "--quiet"]) == 0
    assert [config.to_dict() for config in made] == [
        train_config("+model.overrides.direct_forces=false", data__train=[str(data)], steps=2, optim__lr=3e-3,
                     model__name="painn-tiny", batch_size=2).to_dict(),
        train_config(data__sources=[{"path": str(data), "origin": "dft", "alpha": 0.8},
                                    {"path": str(data), "origin": "rattle", "alpha": 0.2}]).to_dict(),
    ]


def test_partial_config_file_is_merged_over_the_default(data, tmp_path):
    mine = tmp_path / "my.yaml"
    mine.write_text("optim:\n  lr: 0.002\nsteps: 3\n")
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--config", str(mine), "--out", str(run), *TINY]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["optim"]["lr"] == 0.002 and config["optim"]["ema_decay"] == 0.999 and config["steps"] == 3
    assert steps_logged(run)[-1] == 3


def test_unknown_config_key_is_named(data, tmp_path, capsys):
    mine = tmp_path / "my.yaml"
    mine.write_text("optim:\n  lrr: 0.002\n")
    assert main(["train", "--data", str(data), "--config", str(mine), "--out", str(tmp_path / "r"), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"augkd: error: --config {mine}: unknown key optim.lrr") and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_relative_config_dir(data, tmp_path, monkeypatch, capsys):
    import shutil

    from augkd.config import config_dir

    shutil.copytree(config_dir(), tmp_path / "cfg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUGKD_CONFIG_DIR", "cfg")
    assert main(["train", "--data", str(data), "--steps", "1", "--out", str(tmp_path / "r"), *TINY]) == 0


def test_extend_a_finished_run_and_name_changed_keys(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--steps", "3", "--out", str(run), *TINY]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--steps", "5", "--out", str(run), *TINY]) == 0
    err = capsys.readouterr().err
    assert f"resuming {run} from step 3 of 5" in err
    assert steps_logged(run) == [1, 2, 3, 4, 5]
    assert torch.load(run / "checkpoints" / "final.pt", weights_only=True)["extra"]["step"] == 5
    assert main(["train", "--data", str(data), "--steps", "6", "--lr", "0.01", "--out", str(run), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert "optim.lr (0.0001 → 0.01)" in err and "\n" not in err


def test_init_from_a_checkpoint(data, tmp_path):
    base = tmp_path / "base"
    assert main(["train", "--data", str(data), "--steps", "4", "--out", str(base), *TINY]) == 0
    final = base / "checkpoints" / "final.pt"
    tuned = tmp_path / "tuned"
    # no --model: the checkpoint's model is trained
    assert main(["train", "--data", str(data), "--steps", "1", "--lr", "0", "--init-from", str(final),
                 "--init-normalizer", "--batch-size", "2", "--quiet", "--out", str(tuned)]) == 0
    start = torch.load(final, weights_only=True)["state_dict"]
    after = torch.load(tuned / "checkpoints" / "final.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(start[k], after[k]) for k in start)  # lr 0: the weights are the checkpoint's
    fresh = tmp_path / "fresh"
    assert main(["train", "--data", str(data), "--steps", "1", "--lr", "0", "--out", str(fresh), *TINY]) == 0
    other = torch.load(fresh / "checkpoints" / "final.pt", weights_only=True)["state_dict"]
    assert not all(torch.equal(start[k], other[k]) for k in start)
    # from a run's full training state (EMA weights)
    again = tmp_path / "again"
    assert main(["train", "--data", str(data), "--steps", "1", "--lr", "0", "--init-from",
                 str(base / "checkpoints" / "last.pt"), "--out", str(again), *TINY]) == 0


def test_init_from_refuses_another_model(data, tmp_path, capsys):
    base = tmp_path / "base"
    assert main(["train", "--data", str(data), "--steps", "1", "--out", str(base), *TINY]) == 0
    assert main(["train", "--data", str(data), "--steps", "1", "--model", "schnet-tiny", "--init-from",
                 str(base / "checkpoints" / "final.pt"), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "holds model 'painn-tiny', this run trains 'schnet-tiny'" in capsys.readouterr().err


def test_device_flag(data, tmp_path, capsys):
    assert main(["train", "--data", str(data), "--steps", "1", "--device", "cpu", "--out", str(tmp_path / "r"),
                 *TINY]) == 0
    if not torch.cuda.is_available():
        assert main(["train", "--data", str(data), "--steps", "1", "--device", "cuda", "--out",
                     str(tmp_path / "g"), *TINY]) == 2
        assert "this process sees no CUDA device" in capsys.readouterr().err


def test_auto_lambda_is_recorded(data, tmp_path, capsys):
    teacher = tmp_path / "teacher"
    assert main(["train", "--data", str(data), "--steps", "2", "--out", str(teacher), *TINY]) == 0
    run = tmp_path / "kd"
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--steps", "2", "--teacher",
                 f"ckpt:{teacher / 'checkpoints' / 'final.pt'}", "--kd", "n2n:auto", "--out", str(run), *TINY]) == 0
    err = capsys.readouterr().err
    lam = json.loads((run / "config.json").read_text())["resolved"]["kd_lambdas"]["n2n"]
    assert lam > 0 and f"n2n {lam:.4g}" in err
    assert main(["info", str(run)]) == 0
    assert f"{lam:.4g}" in capsys.readouterr().out


def test_threads_flag_sets_torch_threads(data, tmp_path):
    import subprocess
    import sys

    code = ("import sys, torch; from augkd.cli import main; main(sys.argv[1:]); "
            "print('threads', torch.get_num_threads())")
    done = subprocess.run([sys.executable, "-c", code, "train", "--data", str(data), "--steps", "1", "--threads", "1",
                           "--out", str(tmp_path / "r"), *TINY], capture_output=True, text=True)
    assert done.stdout.strip().splitlines()[-1] == "threads 1", done.stderr
    env = {**os.environ, "SLURM_CPUS_PER_TASK": "1"}
    done = subprocess.run([sys.executable, "-c", code, "train", "--data", str(data), "--steps", "1",
                           "--out", str(tmp_path / "s"), *TINY], capture_output=True, text=True, env=env)
    assert done.stdout.strip().splitlines()[-1] == "threads 1", done.stderr


def test_cli_train_and_evaluate(emt_data, tmp_path, capsys):
    run = tmp_path / "cli"
    assert main(["train", "--data", str(emt_data), "--val", str(emt_data), "--out", str(run), "--model",
                 "schnet-tiny", "--steps", "10", "--batch-size", "4", "--quiet", "eval_every=5"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run / "checkpoints" / "final.pt"), "--data", str(emt_data), "--json"]) == 0
    assert '"energy_mae"' in capsys.readouterr().out
    assert main(["train", "--data", str(emt_data), "--out", str(tmp_path / "x"), "--model", "nope", "--quiet"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_cli_bad_mixture_prints_one_line(datasets, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", str(datasets["dft"]), "--synthetic", str(datasets["syn"]), "--alpha-target",
                 "1.5", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--alpha-target 1.5" in err
    assert main(["train", "--data", str(datasets["dft"]), "--r-sdft", "syn=x", "--out", str(out), "--quiet"]) == 2
    assert "--r-sdft 'syn=x'" in capsys.readouterr().err
    assert main(["train", "--source", f"dft={datasets['dft']}", "--source", f"dft={datasets['dft2']}",
                 "--out", str(out), "--quiet"]) == 2
    assert "duplicate origin" in capsys.readouterr().err
    assert not out.exists()  # nothing written


@pytest.mark.slow
def test_cli_alpha_target_and_r_sdft_end_to_end(tmp_path, capsys):
    """`augkd train --alpha-target 0.5 --r-sdft 0.3` on an EMT 'DFT' stand-in plus `augkd generate` synthetic data."""
    dft, syn, run = tmp_path / "dft", tmp_path / "syn", tmp_path / "run"
    assert main(small_generate_args(dft, "origin=dft", "--seed", "3", systems=4, shards=1)) == 0
    assert main(small_generate_args(syn, systems=4, shards=1)) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(dft), "--synthetic", str(syn), "--alpha-target", "0.5", "--r-sdft", "0.3",
                 "--val", str(dft), "--out", str(run), "--model", "painn-tiny", "--steps", "6", "--batch-size", "4",
                 "--quiet", "mixer.epoch_length=12", "eval_every=6",
                 "+model.overrides.hidden_channels=16", "+model.overrides.num_layers=2"]) == 0
    train = read_csv(run / "train.csv")
    assert len(train) == 6
    assert {"loss_energy_dft", "loss_forces_dft", "loss_energy_synthetic", "loss_forces_synthetic"} <= set(train[0])
    assert all(r["loss_energy_dft"] != "" or r["loss_energy_synthetic"] != "" for r in train)
    epochs = read_csv(run / "epochs.csv")
    assert [int(e["draws"]) for e in epochs] == [12, 12]
    assert sum(int(e["draws_synthetic"]) for e in epochs) + sum(int(e["draws_dft"]) for e in epochs) == 24
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    text = capsys.readouterr().out
    assert "training run of painn-tiny, step 6/6" in text
    assert "α synthetic" in text and "L_E synthetic" in text and "0.3" in text
    assert main(["info", str(run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [s["origin"] for s in info["mixture"]["sources"]] == ["dft", "synthetic"]
    assert [e["alpha_synthetic"] for e in info["epochs"]] == pytest.approx(
        [int(e["draws_synthetic"]) / 12 for e in epochs])
    assert np.isfinite(info["val"]["energy_mae"])
