"""`augkd split`: train ∪ val (∪ test) = input, disjoint by sid, seeded and reproducible; outputs are ordinary datasets
that name their parent; bad requests are one-line errors that write nothing."""

import ase.io
import numpy as np
import pytest

from augkd.cli import main
from augkd.io.dataset import load_manifest, read_frames, verify_dataset
from test_import import import_args, relaxation, with_nitrogen


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """12 systems of 1-4 frames each, in three shards."""
    folder = tmp_path_factory.mktemp("split")
    rng = np.random.default_rng(9)
    frames = []
    for system in range(12):
        steps = relaxation(rng, 1 + system % 4)
        for atoms in steps:
            atoms.info["sid"] = f"system-{system:02d}"
        frames += steps if system % 2 else with_nitrogen(steps)
    ase.io.write(folder / "dft.extxyz", frames, format="extxyz")
    out = folder / "dft"
    assert main(import_args([folder / "dft.extxyz"], out, "--shards", "3")) == 0
    return out


def keys(path):
    return sorted((row.data["sid"], row.data["frame"], row.energy) for row in read_frames(path))


def split_args(source, tmp_path, *extra, test=False):
    args = ["split", str(source), "--val", "0.25", "--out-train", str(tmp_path / "train"),
            "--out-val", str(tmp_path / "val"), *extra]
    if test:
        args += ["--test", "0.25", "--out-test", str(tmp_path / "test")]
    return args


def test_split_by_system_covers_the_input_and_keeps_each_system_on_one_side(dataset, tmp_path):
    assert main(split_args(dataset, tmp_path, "--seed", "1")) == 0
    train, val = keys(tmp_path / "train"), keys(tmp_path / "val")
    assert sorted(train + val) == keys(dataset)
    assert not {k[0] for k in train} & {k[0] for k in val}
    assert len({k[0] for k in val}) == 3  # round(0.25 * 12) systems
    for side in ("train", "val"):
        manifest = load_manifest(tmp_path / side)
        assert manifest["parent"]["path"] == str(dataset.resolve())
        assert manifest["parent"]["shards"] == [s["sha256"] for s in load_manifest(dataset)["shards"]]
        assert manifest["split"]["side"] == side and manifest["split"]["by"] == "system"
        assert manifest["origin"] == "dft" and manifest["kind"] == "imported"
        assert verify_dataset(tmp_path / side) == []


def test_same_seed_same_split_other_seed_other_split(dataset, tmp_path):
    for name, seed in (("a", "4"), ("b", "4"), ("c", "5")):
        (tmp_path / name).mkdir()
        assert main(split_args(dataset, tmp_path / name, "--seed", seed)) == 0
    val = {name: {k[0] for k in keys(tmp_path / name / "val")} for name in "abc"}
    assert val["a"] == val["b"] and val["a"] != val["c"]
    assert keys(tmp_path / "a" / "train") == keys(tmp_path / "b" / "train")


def test_three_sides_and_split_by_row(dataset, tmp_path):
    assert main(split_args(dataset, tmp_path, test=True)) == 0
    sides = {side: keys(tmp_path / side) for side in ("train", "val", "test")}
    assert sorted(sides["train"] + sides["val"] + sides["test"]) == keys(dataset)
    sids = {side: {k[0] for k in rows} for side, rows in sides.items()}
    assert not (sids["train"] & sids["val"] or sids["train"] & sids["test"] or sids["val"] & sids["test"])

    rows = tmp_path / "rows"
    rows.mkdir()
    assert main(split_args(dataset, rows, "--by", "row", "--val", "0.5")) == 0
    train, val = keys(rows / "train"), keys(rows / "val")
    assert sorted(train + val) == keys(dataset) and len(val) == round(0.5 * len(keys(dataset)))


def test_interrupted_split_resumes(dataset, tmp_path):
    assert main(split_args(dataset, tmp_path)) == 0
    expected = {side: keys(tmp_path / side) for side in ("train", "val")}
    (tmp_path / "val" / "manifest.json").unlink()  # as if killed after the val shards, before its manifest
    for sidecar in (tmp_path / "train" / "index").glob("*.json"):
        sidecar.unlink()
    (tmp_path / "train" / "manifest.json").unlink()
    assert main(split_args(dataset, tmp_path)) == 0
    assert {side: keys(tmp_path / side) for side in ("train", "val")} == expected


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
