"""`augkd import` of extxyz files (plain and compressed): rows equal the source frames, ids, manifest, drops and
their counts, fairchem and the trainer read the result, resume after a kill (one-line errors that write nothing:
tests/cli/test_import_cli.py)."""

import bz2
import gzip
import lzma
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest

from augkd.hashing import sha256_file
from augkd.io.dataset import load_manifest, read_frames
from augkd.records import fixed_mask
from conftest import train_run
from dft_files import import_files, relaxation, source_frames, write_with_gaps


def assert_row_equals_source(row, atoms):
    np.testing.assert_array_equal(row.atoms.numbers, atoms.numbers)
    np.testing.assert_allclose(row.atoms.positions, atoms.positions, rtol=0, atol=1e-12)
    np.testing.assert_allclose(row.atoms.cell.array, atoms.cell.array, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(row.atoms.pbc, atoms.pbc)
    np.testing.assert_array_equal(row.fixed, fixed_mask(atoms))
    np.testing.assert_array_equal(row.atoms.get_tags(), atoms.get_tags())
    results = atoms.calc.results
    assert row.energy == pytest.approx(results["energy"], rel=0, abs=1e-12)
    np.testing.assert_allclose(row.forces, results["forces"], rtol=0, atol=1e-12)
    if "stress" in results:
        from ase.stress import voigt_6_to_full_3x3_stress

        stress = results["stress"]
        stress = voigt_6_to_full_3x3_stress(stress) if np.shape(stress) == (6,) else np.reshape(stress, (3, 3))
        np.testing.assert_allclose(row.data["stress"], stress, rtol=0, atol=1e-12)
    else:
        assert "stress" not in row.data


def assert_same_data(data, expected):
    assert sorted(data) == sorted(expected)
    for key, value in expected.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(data[key], value)
        else:
            assert data[key] == value, key


def rows_by_position(path):
    return {(row.data["source"], row.data["frame"]): row for row in read_frames(path)}


@pytest.fixture(scope="module")
def extxyz(tmp_path_factory):
    path = tmp_path_factory.mktemp("extxyz") / "dft.extxyz"
    ase.io.write(path, source_frames(), format="extxyz")
    return path


@pytest.fixture(scope="module")
def imported(extxyz, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "dft"
    import_files([extxyz], out, shards=3)
    return out


def test_extxyz_rows_equal_the_source_frames_with_ids_and_provenance(extxyz, imported):
    source = ase.io.read(extxyz, index=":")
    rows = rows_by_position(imported)
    assert sorted(rows) == [("dft.extxyz", i) for i in range(len(source))]
    for (_, frame), row in rows.items():
        assert_row_equals_source(row, source[frame])
        assert row.data["origin"] == "dft" and row.data["source"] == "dft.extxyz"
        assert row.atoms.calc is None and not row.atoms.info
    # composition runs: 4 O frames, 3 N frames, 2 O frames → three systems, fid = step within each
    ids = [(rows[("dft.extxyz", i)].data["sid"], rows[("dft.extxyz", i)].data["fid"]) for i in range(9)]
    assert ids == [("dft.extxyz#0", 0), ("dft.extxyz#0", 1), ("dft.extxyz#0", 2), ("dft.extxyz#0", 3),
                   ("dft.extxyz#1", 0), ("dft.extxyz#1", 1), ("dft.extxyz#1", 2),
                   ("dft.extxyz#2", 0), ("dft.extxyz#2", 1)]


def test_manifest_records_sources_with_checksums_and_counts(extxyz, imported):
    manifest = load_manifest(imported)
    assert manifest["kind"] == "imported" and manifest["origin"] == "dft" and manifest["energy"] == "total"
    assert manifest["sources"] == [{"path": "dft.extxyz", "format": "extxyz", "sha256": sha256_file(extxyz),
                                    "bytes": extxyz.stat().st_size, "frames": 9}]
    assert len(manifest["shards"]) == 3 and [s["rows"] for s in manifest["shards"]] == [3, 3, 3]
    totals = manifest["totals"]
    assert totals["rows"] == totals["frames_kept"] == totals["frames_read"] == 9
    assert totals["dropped_frames"] == {} and totals["rows_by_source"] == {"dft.extxyz": 9}


@pytest.mark.parametrize("opener, suffix", [(lzma.open, ".xz"), (gzip.open, ".gz"), (bz2.open, ".bz2")])
def test_compressed_files_import_as_streams_to_the_same_rows(extxyz, imported, tmp_path, opener, suffix):
    packed = tmp_path / f"dft.extxyz{suffix}"
    with opener(packed, "wb") as handle:
        handle.write(extxyz.read_bytes())
    out = tmp_path / "out"
    import_files([packed], out, shards=2)
    plain, rows = rows_by_position(imported), rows_by_position(out)
    assert len(rows) == len(plain)
    for (_, frame), row in rows.items():
        reference = plain[("dft.extxyz", frame)]
        assert row.data["source"] == packed.name and row.data["sid"] == reference.data["sid"].replace(
            "dft.extxyz", packed.name)
        np.testing.assert_array_equal(row.atoms.positions, reference.atoms.positions)
        assert row.energy == reference.energy and (row.forces == reference.forces).all()


def test_fairchem_reads_the_result_and_augkd_trains_on_it(imported, tmp_path):
    from fairchem.core.datasets import AseDBDataset

    dataset = AseDBDataset({"src": str(imported / "shards"), "a2g_args": {"r_energy": True, "r_forces": True}})
    assert len(dataset) == 9
    sample = dataset[0]
    assert sample.energy.shape == (1,) and sample.forces.shape == (13, 3) and sample.stress.shape == (1, 3, 3)
    assert int(sample.fixed.sum()) == int(next(read_frames(imported)).fixed.sum()) == 4
    run = tmp_path / "run"
    train_run(run, data__train=[str(imported)], model__name="painn-tiny", steps=2, batch_size=4)
    assert (run / "train.csv").is_file()


def test_index_selects_frames_of_every_file_keeping_their_step_ids(extxyz, tmp_path):
    (tmp_path / "a").mkdir()
    first = tmp_path / "a" / "dft.extxyz"
    first.write_bytes(extxyz.read_bytes())
    second = tmp_path / "more.extxyz"
    ase.io.write(second, source_frames(seed=1)[:4], format="extxyz")
    out = tmp_path / "last"
    import_files([first, second], out, index="-1")
    rows = rows_by_position(out)
    assert sorted(rows) == [("a/dft.extxyz", 8), ("more.extxyz", 3)]  # paths relative to the common folder
    assert (rows[("a/dft.extxyz", 8)].data["sid"], rows[("a/dft.extxyz", 8)].data["fid"]) == ("a/dft.extxyz#2", 1)
    assert (rows[("more.extxyz", 3)].data["sid"], rows[("more.extxyz", 3)].data["fid"]) == ("more.extxyz#0", 3)


def test_own_sids_in_the_header_win_and_a_folder_is_searched_recursively(tmp_path):
    folder = tmp_path / "data"
    (folder / "a" / "b").mkdir(parents=True)
    frames = source_frames()[:3]
    for number, atoms in enumerate(frames):
        atoms.info["sid"] = f"slab-{number % 2}"
    ase.io.write(folder / "a" / "b" / "x.extxyz", frames, format="extxyz")
    (folder / "notes.md").write_text("not data\n")
    out = tmp_path / "out"
    import_files([folder], out)
    rows = rows_by_position(out)
    assert sorted(rows) == [("a/b/x.extxyz", i) for i in range(3)]
    assert [(rows[("a/b/x.extxyz", i)].data["sid"], rows[("a/b/x.extxyz", i)].data["fid"]) for i in range(3)] == [
        ("slab-0", 0), ("slab-1", 1), ("slab-0", 2)]  # own sid without fid: the frame's index in the file
    assert load_manifest(out)["files_ignored"] == ["notes.md"]


def test_frames_without_labels_are_dropped_and_counted(tmp_path):
    source = tmp_path / "gaps.extxyz"
    write_with_gaps(source)
    frames = ase.io.read(source, index=":")
    out = tmp_path / "out"
    import_files([source], out)
    rows = rows_by_position(out)
    assert sorted(frame for _, frame in rows) == [0, 2, 6]
    for (_, frame), row in rows.items():
        assert_row_equals_source(row, frames[frame])
    totals = load_manifest(out)["totals"]
    assert totals["dropped_frames"] == {"no_energy": 2, "no_forces": 1, "non_finite": 1}
    assert totals["frames_read"] == 7 and totals["frames_kept"] == 3 and totals["rows_without_fixed_or_tags"] == 1


def test_strict_drops_frames_without_fixed_or_tag_information(tmp_path):
    frames = source_frames()[:4]
    frames[2].set_constraint()
    frames[2].set_tags(0)
    source = tmp_path / "bulkish.extxyz"
    ase.io.write(source, frames, format="extxyz")
    out = tmp_path / "out"
    import_files([source], out, strict=True)
    assert sorted(frame for _, frame in rows_by_position(out)) == [0, 1, 3]
    assert load_manifest(out)["totals"]["dropped_frames"] == {"no_fixed_or_tags": 1}


def test_killed_import_resumes_to_the_uninterrupted_result(tmp_path):
    rng = np.random.default_rng(5)
    big = tmp_path / "big.extxyz.gz"
    frames = [atoms for _ in range(30) for atoms in relaxation(rng, 8)]
    with gzip.open(big, "wt") as handle:
        ase.io.write(handle, frames, format="extxyz")
    reference = tmp_path / "reference"
    import_files([big], reference, shards=12)

    out = tmp_path / "killed"
    run = "import sys; from dft_files import import_files; import_files([sys.argv[1]], sys.argv[2], shards=12)"
    command = [sys.executable, "-c", run, str(big), str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in Path(__file__).parents[1:3])}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "index").glob("*.json")):
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists(), "the import finished before it could be killed"
    import_files([big], out, shards=12, resume=True)
    resumed, expected = rows_by_position(out), rows_by_position(reference)
    assert sorted(resumed) == sorted(expected)
    for key, row in expected.items():
        other = resumed[key]
        assert_same_data(other.data, row.data)
        np.testing.assert_array_equal(other.atoms.positions, row.atoms.positions)
        assert other.energy == row.energy and (other.forces == row.forces).all()
    assert [s["rows"] for s in load_manifest(out)["shards"]] == [s["rows"] for s in load_manifest(reference)["shards"]]
