"""End-to-end d1M generation with a fast teacher (EMT): determinism, resume, fairchem compatibility, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from augkd.cli import main
from augkd.io.dataset import load_manifest, read_frames
from conftest import small_generate_args


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
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "d1M"
    assert main(small_generate_args(out)) == 0
    return out


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
    assert main(small_generate_args(tmp_path / "again")) == 0
    assert_same_rows(rows_of(reference), rows_of(tmp_path / "again"))


def test_shard_count_does_not_change_the_systems(reference, tmp_path):
    assert main(small_generate_args(tmp_path / "three", shards=3)) == 0
    assert_same_rows(rows_of(reference), rows_of(tmp_path / "three"))


def test_rerun_of_complete_dataset_changes_nothing(reference, capsys):
    before = json.loads((reference / "manifest.json").read_text())["shards"]
    assert main(small_generate_args(reference)) == 0
    after = json.loads((reference / "manifest.json").read_text())["shards"]
    assert before == after


def test_sigkill_then_rerun_completes_without_loss_or_duplicates(reference, tmp_path):
    out = tmp_path / "killed"
    args = small_generate_args(out, shards=6)
    command = [sys.executable, "-c", "import sys; from augkd.cli import main; sys.exit(main(sys.argv[1:]))", *args]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
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
    assert main(args) == 0
    assert_same_rows(rows_of(reference), rows_of(out))
    assert main(["verify", str(out)]) == 0


def test_teacher_returning_nan_drops_and_counts_frames(tmp_path):
    out = tmp_path / "nan"
    args = small_generate_args(
        out, "--teacher-kwargs", '{"nan_after": 12}', systems=2, shards=1, teacher="ase:fake_calculators.NaNAfterEMT"
    )
    assert main(args) == 0
    totals = load_manifest(out)["totals"]
    assert totals["dropped_frames"]["nonfinite_labels"] >= 1
    assert totals["dropped_systems"]["nonfinite_labels"] >= 1
    for frame in read_frames(out):
        assert np.isfinite(frame.energy) and np.isfinite(frame.forces).all()


def test_teacher_that_raises_is_counted_not_fatal(tmp_path):
    out = tmp_path / "failing"
    assert main(small_generate_args(out, systems=2, shards=1, teacher="ase:fake_calculators.FailingEMT")) == 0
    manifest = load_manifest(out)
    assert manifest["totals"]["rows"] == 0
    assert manifest["totals"]["dropped_systems"] == {"calculator_error": 2}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--systems": "0"}, "--systems 0"),
        ({"--frames-fraction": "0"}, "fraction 0"),
        ({"--frames-fraction": "1.5"}, "fraction 1.5"),
        ({"--teacher": "nosuchteacher"}, "unknown teacher 'nosuchteacher'"),
        ({"--teacher": "ase:nosuchmodule.Calc"}, "nosuchmodule"),
        ({"--elements": "Xe,Kr"}, "leaves no bulk"),
        ({"--elements": "Cu"}, "leaves no adsorbate"),
        ({"--bulks": "/nonexistent/bulks.pkl"}, "/nonexistent/bulks.pkl"),
        ({"--optimizer": "NoSuchOptimizer"}, "NoSuchOptimizer"),
        ({"--shards": "99"}, "--shards 99"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, change, message):
    out = tmp_path / "out"
    args = small_generate_args(out)
    for flag, value in change.items():
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("augkd: error:") and "\n" not in err and message in err
    assert not out.exists()


def test_unreadable_bulk_file_is_refused(tmp_path, capsys):
    bad = tmp_path / "bulks.cif"
    bad.write_text("this is not a crystal\n")
    out = tmp_path / "out"
    args = small_generate_args(out, "--bulks", str(bad))
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert str(bad) in err and "\n" not in err
    assert not out.exists()


def test_foreign_or_file_out_is_refused(tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    assert main(small_generate_args(foreign)) == 2
    assert "not an augkd dataset" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]
    file_out = tmp_path / "file"
    file_out.write_text("x")
    assert main(small_generate_args(file_out)) == 2
    assert "not a directory" in capsys.readouterr().err


def test_resume_with_another_plan_is_refused(reference, capsys):
    assert main(small_generate_args(reference, "--fmax", "0.2")) == 2
    err = capsys.readouterr().err
    assert "another plan" in err and "fmax" in err


def test_info_and_verify(reference, tmp_path, capsys):
    assert main(["info", str(reference), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == load_manifest(reference)["totals"]["rows"]
    assert info["origins"] == {"synthetic": info["rows"]}
    assert {"Cu", "O"} & set(info["elements"]) and info["energy_per_atom_eV"]["min"] <= info["energy_per_atom_eV"]["max"]
    assert main(["info", str(reference)]) == 0
    assert "dropped frames" in capsys.readouterr().out
    assert main(["verify", str(reference)]) == 0

    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(reference, broken)
    shard = broken / "shards" / "shard-00001.aselmdb"
    blob = bytearray(shard.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    shard.write_bytes(bytes(blob))
    capsys.readouterr()
    assert main(["verify", str(broken)]) == 1
    assert "shard-00001.aselmdb" in capsys.readouterr().err


def test_process_pool_gives_the_same_rows(reference, tmp_path):
    assert main(small_generate_args(tmp_path / "pool", "--workers", "2", shards=3)) == 0
    assert_same_rows(rows_of(reference), rows_of(tmp_path / "pool"))


@pytest.mark.slow
def test_default_teacher_end_to_end(tmp_path):
    """The embedded default teacher (CHGNet 0.3.0 from its wheel), offline, read back by fairchem."""
    from fairchem.core.datasets import AseDBDataset

    from augkd.hashing import sha256_file

    out = tmp_path / "chgnet"
    args = ["generate", "d1M", "--out", str(out), "--systems", "2", "--max-atoms", "50", "--steps", "15",
            "--frames-fraction", "0.3", "--keep-final", "--quiet", "systems_sampler.max_miller=1",
            "filters.surface_reference=initial_slab"]
    assert main(args) == 0
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
