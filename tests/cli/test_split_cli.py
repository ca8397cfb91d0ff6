"""`augkd split` on the command line: bad requests, and inputs that are not datasets, are one line on stderr with exit
status 2 and write nothing."""

import pytest

from augkd.cli import main
from dft_files import twelve_systems


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return twelve_systems(tmp_path_factory.mktemp("split"))


def split_args(source, tmp_path, *extra, test=False):
    args = ["split", str(source), "--val", "0.25", "--out-train", str(tmp_path / "train"),
            "--out-val", str(tmp_path / "val"), *extra]
    if test:
        args += ["--test", "0.25", "--out-test", str(tmp_path / "test")]
    return args


@pytest.mark.parametrize("extra, message", [
    (("--val", "0"), "--val 0 must be in (0, 1)"),
    (("--val", "1"), "--val 1 must be in (0, 1)"),
    (("--val", "1.5"), "--val 1.5 must be in (0, 1)"),
    (("--val", "0.6", "--test", "0.5", "--out-test", "T"), "must leave a training share"),
    (("--test", "0.1"), "--test and --out-test go together"),
    (("--val", "0.99"), "12 systems cannot fill train, val"),
])
def test_bad_requests_are_one_line_errors_writing_nothing(dataset, tmp_path, capsys, extra, message):
    assert main(split_args(dataset, tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("augkd: error:") and message in err and "\n" not in err, err
    assert not (tmp_path / "train").exists() and not (tmp_path / "val").exists()


def test_input_that_is_not_a_dataset_says_how_to_import_it(dataset, tmp_path, capsys):
    raw = tmp_path / "dft.extxyz"
    raw.write_text("")
    folder = tmp_path / "vasp-runs"
    folder.mkdir()
    for source in (raw, folder):
        assert main(split_args(source, tmp_path)) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"augkd: error: {source} is not an augkd dataset; run: augkd import {source} --out DIR"
    assert main(["split", str(dataset), "--val", "0.2", "--out-train", str(dataset / "t"), "--out-val",
                 str(tmp_path / "v")]) == 2
    assert "must lie outside the input dataset" in capsys.readouterr().err
