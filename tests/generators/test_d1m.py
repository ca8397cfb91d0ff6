"""End-to-end d1M generation with a fast teacher (EMT): determinism, resume, fairchem compatibility, failing teachers
(bad input on the command line: tests/cli/test_generate_cli.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from augkd.io.dataset import load_manifest, read_frames, verify_dataset
from conftest import generate_config, run_job, small_generate_job


def rows_of(path):
    """Rows keyed by (sid, fid), with what must be identical between equivalent runs."""
    rows = {}
    for frame in read_frames(path):
        key = (frame.data["sid"], frame.data["fid"])
        assert key not in rows, f"duplicate row {key}"
        rows[key] = frame
    return rows


def assert_same_rows(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        x, y = a[key], b[key]
        np.testing.assert_array_equal(x.atoms.positions, y.atoms.positions)
        np.testing.assert_array_equal(x.atoms.numbers, y.atoms.numbers)
        np.testing.assert_array_equal(x.atoms.cell, y.atoms.cell)
        np.testing.assert_array_equal(x.atoms.get_tags(), y.atoms.get_tags())
        np.testing.assert_array_equal(x.fixed, y.fixed)
        assert x.energy == y.energy
        np.testing.assert_array_equal(x.forces, y.forces)
        assert x.data == y.data


@pytest.fixture(scope="module")
def reference(small_d1m):
    return small_d1m()


def test_dataset_layout_and_provenance(reference):
    manifest = load_manifest(reference)
    assert manifest["kind"] == "d1M" and manifest["teacher"]["name"] == "emt"
    assert manifest["teacher"]["weights_sha256"]
    assert manifest["seed"] == 7 and manifest["systems"] == 6 and manifest["shard_count"] == 2
    assert manifest["config"]["relax"]["steps"] == 25
    assert [s["file"] for s in manifest["shards"]] == ["shards/shard-00000.aselmdb", "shards/shard-00001.aselmdb"]
    totals = manifest["totals"]
    assert totals["systems"] == 6
    assert totals["rows"] == sum(s["rows"] for s in manifest["shards"]) > 0
    assert totals["frames_kept"] == totals["rows"]
    # every visited frame is either kept or dropped for a reason
    assert totals["frames_visited"] == totals["frames_kept"] + sum(totals["dropped_frames"].values())
    rows = rows_of(reference)
    assert len(rows) == totals["rows"]
    for (sid, fid), frame in rows.items():
        assert sid.startswith("d1M-7-")
        assert frame.data["origin"] == "synthetic" and frame.data["teacher"] == "emt"
        assert frame.data["relax_step"] == fid and isinstance(frame.data["system_seed"], int)
        assert set(np.unique(frame.atoms.get_tags())) <= {0, 1, 2} and (frame.atoms.get_tags() == 2).any()
        assert frame.fixed.any() and (frame.fixed == (frame.atoms.get_tags() == 0)).all()
        assert len(frame.atoms) <= 60
    assert not (reference / "tmp").exists()


def test_fairchem_asedbdataset_reads_every_row(reference):
    from fairchem.core.datasets import AseDBDataset

    dataset = AseDBDataset({"src": str(reference / "shards"), "a2g_args": {"r_energy": True, "r_forces": True}})
    frames = list(read_frames(reference))
    assert len(dataset) == len(frames)
    for i, frame in enumerate(frames):
        data = dataset[i]
        assert float(data.energy) == pytest.approx(frame.energy, rel=1e-6)
        np.testing.assert_allclose(data.forces.numpy(), frame.forces, atol=1e-5)
        np.testing.assert_array_equal(data.fixed.numpy().astype(bool), frame.fixed)
        np.testing.assert_array_equal(data.tags.numpy(), frame.atoms.get_tags())


def test_same_seed_gives_identical_rows(reference, tmp_path):
    run_job(small_generate_job(), tmp_path / "again")
    assert_same_rows(rows_of(reference), rows_of(tmp_path / "again"))


def test_shard_count_does_not_change_the_systems(reference, tmp_path):
    run_job(small_generate_job(shards=3), tmp_path / "three")
    assert_same_rows(rows_of(reference), rows_of(tmp_path / "three"))


def test_rerun_of_complete_dataset_changes_nothing(reference, capsys):
    before = json.loads((reference / "manifest.json").read_text())["shards"]
    run_job(small_generate_job(), reference)
    after = json.loads((reference / "manifest.json").read_text())["shards"]
    assert before == after


def test_sigkill_then_rerun_completes_without_loss_or_duplicates(reference, tmp_path):
    out = tmp_path / "killed"
    run = ("import sys; from conftest import run_job, small_generate_job; "
           "run_job(small_generate_job(shards=6), sys.argv[1])")
    command = [sys.executable, "-c", run, str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in Path(__file__).parents[1:3])}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "index").glob("*.json"))) < 2:
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(list((out / "index").glob("*.json")))
    assert 2 <= done_before < 6, "the kill must land mid-run"
    assert not (out / "manifest.json").exists()
    run_job(small_generate_job(shards=6), out)
    assert_same_rows(rows_of(reference), rows_of(out))
    assert verify_dataset(out) == []


def test_teacher_returning_nan_drops_and_counts_frames(tmp_path):
    out = tmp_path / "nan"
    job = small_generate_job(teacher_kwargs={"nan_after": 12}, systems=2, shards=1,
                             teacher="ase:fake_calculators.NaNAfterEMT")
    run_job(job, out)
    totals = load_manifest(out)["totals"]
    assert totals["dropped_frames"]["nonfinite_labels"] >= 1
    assert totals["dropped_systems"]["nonfinite_labels"] >= 1
    for frame in read_frames(out):
        assert np.isfinite(frame.energy) and np.isfinite(frame.forces).all()


def test_teacher_that_raises_is_counted_not_fatal(tmp_path):
    out = tmp_path / "failing"
    run_job(small_generate_job(systems=2, shards=1, teacher="ase:fake_calculators.FailingEMT"), out)
    manifest = load_manifest(out)
    assert manifest["totals"]["rows"] == 0
    assert manifest["totals"]["dropped_systems"] == {"calculator_error": 2}


def test_process_pool_gives_the_same_rows(reference, tmp_path):
    run_job(small_generate_job(shards=3), tmp_path / "pool", workers=2)
    assert_same_rows(rows_of(reference), rows_of(tmp_path / "pool"))


@pytest.mark.slow
def test_default_teacher_end_to_end(tmp_path):
    """The embedded default teacher (CHGNet 0.3.0 from its wheel), offline, read back by fairchem."""
    from fairchem.core.datasets import AseDBDataset

    from augkd.hashing import sha256_file

    from augkd.distributed.jobs import GenerateJob

    out = tmp_path / "chgnet"
    config = generate_config("d1M", ["systems_sampler.max_miller=1", "filters.surface_reference=initial_slab"],
                             systems=2, systems_sampler__max_atoms=50, relax__steps=15, frames__fraction=0.3,
                             frames__keep_final=True)
    run_job(GenerateJob(config), out)
    manifest = load_manifest(out)
    teacher = manifest["teacher"]
    assert teacher["name"] == "chgnet-0.3.0" and teacher["kind"] == "chgnet"
    assert teacher["weights_sha256"] == sha256_file(teacher["checkpoint"])
    frames = list(read_frames(out))
    assert frames and all(f.data["teacher"] == "chgnet-0.3.0" for f in frames)
    dataset = AseDBDataset({"src": str(out / "shards"), "a2g_args": {"r_energy": True, "r_forces": True}})
    assert len(dataset) == len(frames)
    for i, frame in enumerate(frames):
        assert float(dataset[i].energy) == pytest.approx(frame.energy, rel=1e-6)
        assert -10 < frame.energy / len(frame.atoms) < 0  # CHGNet energies of metal slabs: a few eV/atom below zero
