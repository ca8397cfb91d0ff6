"""`augkd import` of extxyz files (plain and compressed): rows equal the source frames, ids, manifest, drops and
their counts, one-line errors that write nothing, fairchem and the trainer read the result, resume after a kill."""

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
from ase.calculators.singlepoint import SinglePointCalculator

from augkd.cli import main
from augkd.hashing import sha256_file
from augkd.io.dataset import load_manifest, read_frames
from augkd.records import fixed_mask
from conftest import cu_adslab


def relaxation(rng, steps, adsorbate_shift=0.0, stress=True):
    """Frames of one OC20-style Cu(111)+O 'relaxation': FixAtoms on tag 0, tags 0/1/2, energy, forces, stress."""
    start = cu_adslab(rng)
    start.positions[-1, 0] += adsorbate_shift
    start.info.clear()  # ase.build's adsorbate_info: not a frame property
    frames = []
    for step in range(steps):
        atoms = start.copy()
        atoms.positions += rng.normal(scale=0.01 * (steps - step), size=atoms.positions.shape)
        labels = {"energy": float(-50 + rng.normal()), "forces": rng.normal(size=(len(atoms), 3))}
        if stress:
            labels["stress"] = rng.normal(scale=0.01, size=6)
        atoms.calc = SinglePointCalculator(atoms, **labels)
        frames.append(atoms)
    return frames


def with_nitrogen(frames):
    """The same frames with the adsorbate made N: another composition, so another run."""
    for atoms in frames:
        results = atoms.calc.results
        atoms.numbers[-1] = 7
        atoms.calc = SinglePointCalculator(atoms, **results)
    return frames


def source_frames(seed=0, stress=True):
    rng = np.random.default_rng(seed)
    return relaxation(rng, 4, stress=stress) + with_nitrogen(relaxation(rng, 3, 0.5, stress)) + relaxation(rng, 2)


def import_args(sources, out, *extra):
    return ["import", *map(str, sources), "--out", str(out), "--quiet", *extra]


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
    assert main(import_args([extxyz], out, "--shards", "3")) == 0
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
    assert main(import_args([packed], out, "--shards", "2")) == 0
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
    assert main(["train", "--data", str(imported), "--model", "painn-tiny", "--steps", "2", "--batch-size", "4",
                 "--out", str(run), "--quiet"]) == 0
    assert (run / "train.csv").is_file()


def test_index_selects_frames_of_every_file_keeping_their_step_ids(extxyz, tmp_path):
    (tmp_path / "a").mkdir()
    first = tmp_path / "a" / "dft.extxyz"
    first.write_bytes(extxyz.read_bytes())
    second = tmp_path / "more.extxyz"
    ase.io.write(second, source_frames(seed=1)[:4], format="extxyz")
    out = tmp_path / "last"
    assert main(import_args([first, second], out, "--index", "-1")) == 0
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
    assert main(import_args([folder], out)) == 0
    rows = rows_by_position(out)
    assert sorted(rows) == [("a/b/x.extxyz", i) for i in range(3)]
    assert [(rows[("a/b/x.extxyz", i)].data["sid"], rows[("a/b/x.extxyz", i)].data["fid"]) for i in range(3)] == [
        ("slab-0", 0), ("slab-1", 1), ("slab-0", 2)]  # own sid without fid: the frame's index in the file
    assert load_manifest(out)["files_ignored"] == ["notes.md"]


def write_with_gaps(path):
    """Frames 1 and 3 have no labels at all, frame 4 no forces, frame 5 a NaN force, frame 6 no tags/FixAtoms."""
    frames = source_frames(stress=False)[:7]
    frames[1].calc = None
    frames[3].calc = None
    frames[4].calc = SinglePointCalculator(frames[4], energy=-3.0)
    forces = frames[5].calc.results["forces"].copy()
    forces[2, 1] = np.nan
    frames[5].calc = SinglePointCalculator(frames[5], energy=-2.0, forces=forces)
    frames[6].set_constraint()
    frames[6].set_tags(0)
    ase.io.write(path, frames, format="extxyz")
    return frames


def test_frames_without_labels_are_dropped_and_counted(tmp_path):
    source = tmp_path / "gaps.extxyz"
    write_with_gaps(source)
    frames = ase.io.read(source, index=":")
    out = tmp_path / "out"
    assert main(import_args([source], out)) == 0
    rows = rows_by_position(out)
    assert sorted(frame for _, frame in rows) == [0, 2, 6]
    for (_, frame), row in rows.items():
        assert_row_equals_source(row, frames[frame])
    totals = load_manifest(out)["totals"]
    assert totals["dropped_frames"] == {"no_energy": 2, "no_forces": 1, "non_finite": 1}
    assert totals["frames_read"] == 7 and totals["frames_kept"] == 3 and totals["rows_without_fixed_or_tags"] == 1


def test_strict_refuses_unlabelled_frames_naming_file_and_frame(tmp_path, capsys):
    source = tmp_path / "gaps.extxyz"
    write_with_gaps(source)
    out = tmp_path / "out"
    assert main(import_args([source], out, "--strict")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("augkd: error: gaps.extxyz: frame 1: no energy") and "\n" not in err
    assert not out.exists()


def test_strict_drops_frames_without_fixed_or_tag_information(tmp_path):
    frames = source_frames()[:4]
    frames[2].set_constraint()
    frames[2].set_tags(0)
    source = tmp_path / "bulkish.extxyz"
    ase.io.write(source, frames, format="extxyz")
    out = tmp_path / "out"
    assert main(import_args([source], out, "--strict")) == 0
    assert sorted(frame for _, frame in rows_by_position(out)) == [0, 1, 3]
    assert load_manifest(out)["totals"]["dropped_frames"] == {"no_fixed_or_tags": 1}


def truncated(path, text):
    path.write_text(text[: text.index("\n", len(text) // 2) + 1] + "Cu 0.0 0.0")  # cut inside an atom line


def corrupt_xz(path, text):
    data = lzma.compress(text.encode())
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("make, name, message", [
    (truncated, "cut.extxyz", "cut.extxyz: truncated in frame 4"),
    (corrupt_xz, "cut.extxyz.xz", "cut.extxyz.xz: unreadable after frame"),
    (lambda path, text: path.write_text(text.replace("energy=", "E=").replace(":forces:R:3", ":f:R:3")),
     "plain.extxyz", "plain.extxyz: no frame carries energy and forces"),
    (lambda path, text: path.write_text("3\nwater\nO 0 0 0\nH 0 0 1\nH 0 1 0\n"), "water.xyz",
     "water.xyz: no frame carries energy and forces"),
    (lambda path, text: path.write_text("13\n" + text.split("\n", 1)[1].replace("13\n", "x\n", 1)), "bad.extxyz",
     "bad.extxyz: frame 1: expected the number of atoms"),
])
def test_bad_files_are_one_line_errors_naming_the_file_and_nothing_is_written(extxyz, tmp_path, capsys, make, name,
                                                                               message):
    bad = tmp_path / name
    make(bad, extxyz.read_text())
    out = tmp_path / "out"
    assert main(import_args([bad], out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"augkd: error: {message}") and "\n" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["nothere.extxyz"], "nothere.extxyz: no such file or folder"),
    (["nothere/*.extxyz"], "nothere/*.extxyz matches no file"),
    (["{extxyz}", "--energy", "adsorption"], "dft.extxyz: --energy adsorption needs OC20 S2EF pairs"),
    (["{extxyz}", "--index", "a:b"], "--index 'a:b'"),
    (["{extxyz}", "--index", "20"], "dft.extxyz: --index 20 is outside its 9 frames"),
    (["{extxyz}", "--shards", "0"], "--shards 0"),
    (["{extxyz}", "--origin", "d f t"], "--origin 'd f t'"),
])
def test_bad_requests_are_one_line_errors(extxyz, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert main(import_args([a.format(extxyz=extxyz) for a in args], out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("augkd: error:") and message in err and "\n" not in err, err
    assert not out.exists()


def test_out_with_foreign_content_is_refused_untouched(extxyz, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert main(import_args([extxyz], out)) == 2
    assert "is not an augkd dataset" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_out_inside_an_input_folder_is_refused(extxyz, tmp_path, capsys):
    assert main(import_args([extxyz.parent], extxyz.parent / "out")) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert not (extxyz.parent / "out").exists()


def test_rerun_completes_nothing_new_and_changed_inputs_are_refused(extxyz, tmp_path, capsys):
    source = tmp_path / "dft.extxyz"
    source.write_bytes(extxyz.read_bytes())
    out = tmp_path / "out"
    assert main(import_args([source], out)) == 0
    first = load_manifest(out)
    assert main(import_args([source], out)) == 0  # nothing to do: same shards, same checksums
    assert [s["sha256"] for s in load_manifest(out)["shards"]] == [s["sha256"] for s in first["shards"]]
    source.write_text(source.read_text().replace("Cu ", "Cu  ", 1))
    capsys.readouterr()
    assert main(import_args([source], out)) == 2
    assert "another plan" in capsys.readouterr().err


def test_killed_import_resumes_to_the_uninterrupted_result(tmp_path):
    rng = np.random.default_rng(5)
    big = tmp_path / "big.extxyz.gz"
    frames = [atoms for _ in range(30) for atoms in relaxation(rng, 8)]
    with gzip.open(big, "wt") as handle:
        ase.io.write(handle, frames, format="extxyz")
    reference = tmp_path / "reference"
    assert main(import_args([big], reference, "--shards", "12")) == 0

    out = tmp_path / "killed"
    args = import_args([big], out, "--shards", "12")
    command = [sys.executable, "-c", "import sys; from augkd.cli import main; sys.exit(main(sys.argv[1:]))", *args]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "index").glob("*.json")):
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists(), "the import finished before it could be killed"
    assert main([*args, "--resume"]) == 0
    resumed, expected = rows_by_position(out), rows_by_position(reference)
    assert sorted(resumed) == sorted(expected)
    for key, row in expected.items():
        other = resumed[key]
        assert_same_data(other.data, row.data)
        np.testing.assert_array_equal(other.atoms.positions, row.atoms.positions)
        assert other.energy == row.energy and (other.forces == row.forces).all()
    assert [s["rows"] for s in load_manifest(out)["shards"]] == [s["rows"] for s in load_manifest(reference)["shards"]]
