"""`augkd split`: train ∪ val (∪ test) = input, disjoint by sid, seeded and reproducible; outputs are ordinary datasets
that name their parent (bad requests, one-line errors that write nothing: tests/cli/test_split_cli.py)."""

import pytest

from augkd.io.dataset import load_manifest, read_frames, verify_dataset
from augkd.io.split import SplitConfig, split_dataset
from dft_files import twelve_systems


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return twelve_systems(tmp_path_factory.mktemp("split"))


def keys(path):
    return sorted((row.data["sid"], row.data["frame"], row.energy) for row in read_frames(path))


def split(source, tmp_path, test=False, val=0.25, **config):
    """``augkd split SOURCE --val 0.25 --out-train T/train --out-val T/val`` (``test``: ``--test 0.25 --out-test
    T/test``) without the command line; ``config``: ``SplitConfig``'s other fields (by, seed)."""
    outputs = {"train": tmp_path / "train", "val": tmp_path / "val"}
    if test:
        outputs["test"], config["test"] = tmp_path / "test", 0.25
    return split_dataset(source, SplitConfig(val=val, **config), outputs)


def test_split_by_system_covers_the_input_and_keeps_each_system_on_one_side(dataset, tmp_path):
    split(dataset, tmp_path, seed=1)
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
        split(dataset, tmp_path / name, seed=int(seed))
    val = {name: {k[0] for k in keys(tmp_path / name / "val")} for name in "abc"}
    assert val["a"] == val["b"] and val["a"] != val["c"]
    assert keys(tmp_path / "a" / "train") == keys(tmp_path / "b" / "train")


def test_three_sides_and_split_by_row(dataset, tmp_path):
    split(dataset, tmp_path, test=True)
    sides = {side: keys(tmp_path / side) for side in ("train", "val", "test")}
    assert sorted(sides["train"] + sides["val"] + sides["test"]) == keys(dataset)
    sids = {side: {k[0] for k in rows} for side, rows in sides.items()}
    assert not (sids["train"] & sids["val"] or sids["train"] & sids["test"] or sids["val"] & sids["test"])

    rows = tmp_path / "rows"
    rows.mkdir()
    split(dataset, rows, by="row", val=0.5)
    train, val = keys(rows / "train"), keys(rows / "val")
    assert sorted(train + val) == keys(dataset) and len(val) == round(0.5 * len(keys(dataset)))


def test_interrupted_split_resumes(dataset, tmp_path):
    split(dataset, tmp_path)
    expected = {side: keys(tmp_path / side) for side in ("train", "val")}
    (tmp_path / "val" / "manifest.json").unlink()  # as if killed after the val shards, before its manifest
    for sidecar in (tmp_path / "train" / "index").glob("*.json"):
        sidecar.unlink()
    (tmp_path / "train" / "manifest.json").unlink()
    split(dataset, tmp_path)
    assert {side: keys(tmp_path / side) for side in ("train", "val")} == expected


