"""`augkd jitter`: the jitter generator run as a shard job — deterministic, executor-independent, resumable after a
kill, refusing bad input before writing, and its output a mixer source for `augkd train`."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from augkd.cli import main
from augkd.io.dataset import load_manifest, read_frames
from conftest import small_generate_args
from generators.test_d1m import assert_same_rows
from models.model_helpers import tiny_model

NORM = 0.1


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("src") / "d1M"
    assert main(small_generate_args(out, "--frames-fraction", "0.2", shards=3)) == 0
    return out


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    from augkd.models.checkpoint import save_model

    path = tmp_path_factory.mktemp("student") / "student.pt"
    return save_model(path, tiny_model("painn-tiny", dtype=torch.float32, seed=0))


def jitter_args(source, out, *extra, mode="rattle", copies=2):
    return ["jitter", "--in", str(source), "--out", str(out), "--norm", str(NORM), "--mode", mode, "--teacher", "emt",
            "--copies", str(copies), "--seed", "3", "--quiet", *extra]


def rows_by_copy(path):
    rows = {}
    for frame in read_frames(path):
        key = (frame.data["parent_sid"], frame.data["parent_fid"], frame.data["copy"])
        assert key not in rows, f"duplicate row {key}"
        rows[key] = frame
    return rows


@pytest.fixture(scope="module")
def rattled(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("rattled") / "rattle"
    assert main(jitter_args(source, out)) == 0
    return out


def test_rattle_copies_every_row_moving_free_atoms_exactly_norm(source, rattled):
    parents = {(f.data["sid"], f.data["fid"]): f for f in read_frames(source)}
    rows = rows_by_copy(rattled)
    assert sorted(rows) == sorted((sid, fid, copy) for sid, fid in parents for copy in range(2))
    for (sid, fid, _), row in rows.items():
        parent = parents[(sid, fid)]
        moved = np.linalg.norm(row.atoms.positions - parent.atoms.positions, axis=1)
        np.testing.assert_allclose(moved[~parent.fixed], NORM, atol=1e-6)
        assert (moved[parent.fixed] == 0).all()
        assert row.data["origin"] == "rattle" and row.data["jitter_norm"] == NORM
        assert row.data["teacher"] == "emt" or row.energy != parent.energy  # labelled anew by the teacher
    manifest = load_manifest(rattled)
    assert manifest["origin"] == "rattle" and manifest["jitter"]["copies"] == 2
    assert manifest["totals"]["rows"] == 2 * len(parents)


def test_same_seed_same_rows_whatever_the_executor(source, rattled, tmp_path):
    for name, extra in (("again", ()), ("pool", ("--workers", "2")), ("dask", ("--executor", "dask", "--workers", "2"))):
        out = tmp_path / name
        assert main(jitter_args(source, out, *extra)) == 0
        assert_same_rows(rows_by_copy(rattled), rows_by_copy(out))


def test_output_loads_in_fairchem_and_trains_as_a_mixer_source(source, rattled, tmp_path):
    from fairchem.core.datasets import AseDBDataset

    dataset = AseDBDataset({"src": str(rattled / "shards")})
    assert len(dataset) == load_manifest(rattled)["totals"]["rows"]
    run = tmp_path / "run"
    assert main(["train", "--source", f"dft={source}", "--source", f"rattle={rattled}", "--model", "painn-tiny",
                 "--steps", "2", "--batch-size", "4", "--out", str(run), "--quiet"]) == 0
    assert "loss_energy_rattle" in (run / "train.csv").read_text().splitlines()[0]


def test_adversarial_through_the_cli_and_killed_run_resumes(source, student, tmp_path):
    reference = tmp_path / "reference"
    args = jitter_args(source, reference, "--student", str(student), mode="adversarial", copies=1)
    assert main(args) == 0
    rows = rows_by_copy(reference)
    assert {row.data["origin"] for row in rows.values()} == {"adversarial"}
    assert load_manifest(reference)["student"]["sha256"]

    out = tmp_path / "killed"
    args = jitter_args(source, out, "--student", str(student), mode="adversarial", copies=1)
    command = [sys.executable, "-c", "import sys; from augkd.cli import main; sys.exit(main(sys.argv[1:]))", *args]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "index").glob("*.json")):
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists()
    assert main([*args, "--resume"]) == 0
    # Every row exactly once. Values to float32 rounding only: the attack's backward pass (scatter-adds) sums in
    # an order that depends on the torch thread count, which differs between that process and this one.
    resumed = rows_by_copy(out)
    assert sorted(resumed) == sorted(rows)
    for key, row in rows.items():
        np.testing.assert_allclose(resumed[key].atoms.positions, row.atoms.positions, atol=1e-6)
        assert resumed[key].energy == pytest.approx(row.energy, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("extra, mode, message", [
    (("--norm", "0"), "rattle", "norm"),
    (("--norm", "1.5"), "rattle", "1.5"),
    ((), "adversarial", "--student"),
    ((), "sideways", "sideways"),
    (("--student", "nothere.pt"), "adversarial", "nothere.pt"),
])
def test_bad_input_is_one_line_and_writes_nothing(source, tmp_path, capsys, extra, mode, message):
    out = tmp_path / "bad"
    assert main([*jitter_args(source, out, mode=mode), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("augkd: error:") and "\n" not in err and message in err
    assert not out.exists()
