"""`augkd import` on the command line: bad files and bad requests are one line on stderr naming the file, with exit
status 2, and write nothing; a rerun with changed inputs is refused."""

import lzma

import ase.io
import numpy as np
import pytest

from augkd.cli import main
from augkd.io.dataset import load_manifest
from dft_files import (
    import_args, source_frames, vasp_relaxation, write_outcar, write_s2ef, write_vasprun, write_with_gaps,
)


@pytest.fixture(scope="module")
def extxyz(tmp_path_factory):
    path = tmp_path_factory.mktemp("extxyz") / "dft.extxyz"
    ase.io.write(path, source_frames(), format="extxyz")
    return path


def test_strict_refuses_unlabelled_frames_naming_file_and_frame(tmp_path, capsys):
    source = tmp_path / "gaps.extxyz"
    write_with_gaps(source)
    out = tmp_path / "out"
    assert main(import_args([source], out, "--strict")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("augkd: error: gaps.extxyz: frame 1: no energy") and "\n" not in err
    assert not out.exists()


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


@pytest.fixture(scope="module")
def vasp_run(tmp_path_factory):
    """The VASP folder of tests/io/test_import_formats.py: POSCAR, OUTCAR and vasprun.xml of a 3-step relaxation."""
    folder = tmp_path_factory.mktemp("vasp") / "Cu4O"
    folder.mkdir()
    atoms, steps = vasp_relaxation(3)
    ase.io.write(folder / "POSCAR", atoms, format="vasp", direct=True)
    write_outcar(folder / "OUTCAR", atoms, steps)
    write_vasprun(folder / "vasprun.xml", atoms, steps)
    return folder, steps


def test_oc20_txt_that_does_not_match_its_frames_is_refused(tmp_path, capsys):
    folder = tmp_path / "s2ef"
    write_s2ef(folder, np.random.default_rng(4), sizes=(3,))
    with lzma.open(folder / "0.txt.xz", "rt") as handle:
        lines = handle.readlines()
    with lzma.open(folder / "0.txt.xz", "wt") as handle:
        handle.writelines(lines[:2])
    assert main(import_args([folder], tmp_path / "out")) == 2
    assert "0.txt.xz: 2 lines for the 3 frames" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_truncated_vasprun_is_refused(vasp_run, tmp_path, capsys):
    folder, _ = vasp_run
    cut = tmp_path / "vasprun.xml"
    text = (folder / "vasprun.xml").read_text()
    cut.write_text(text[: text.rindex("<calculation>")])
    assert main(import_args([cut], tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "vasprun.xml: truncated" in err and not (tmp_path / "out").exists()


def test_a_format_without_labels_is_refused_naming_the_file(vasp_run, tmp_path, capsys):
    folder, _ = vasp_run
    assert main(import_args([folder / "POSCAR"], tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("augkd: error: POSCAR: no frame carries energy and forces") and "\n" not in err
    assert not (tmp_path / "out").exists()
