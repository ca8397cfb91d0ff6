"""Damaged shards never crash a reader: every command that reads a dataset names the shard in one line and writes
nothing; other readers (ASE, fairchem) leave nothing behind that `augkd verify` minds."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from augkd.cli import main
from mixers.mixer_helpers import emt_dataset

DAMAGES = ("truncated", "zero-byte", "missing", "bit-flipped")


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return emt_dataset(tmp_path_factory.mktemp("good") / "dft", rows=6, origin="dft")


@pytest.fixture(scope="module")
def checkpoint(good, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", "--data", str(good), "--model", "painn-tiny", "--steps", "2", "--batch-size", "2",
                 "--out", str(run), "--quiet"]) == 0
    return run / "checkpoints" / "final.pt"


def damage(dataset: Path, how: str) -> Path:
    shard = dataset / "shards" / "shard-00000.aselmdb"
    if how == "truncated":
        with open(shard, "r+b") as handle:
            handle.truncate(shard.stat().st_size // 3)
    elif how == "zero-byte":
        shard.write_bytes(b"")
    elif how == "missing":
        shard.unlink()
    else:
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0x10
        shard.write_bytes(bytes(data))
    return shard


def damaged_copy(good: Path, tmp_path: Path, how: str) -> Path:
    copy = tmp_path / "damaged"
    shutil.copytree(good, copy)
    damage(copy, how)
    return copy


def commands(data: Path, out: Path, checkpoint: Path) -> dict[str, list[str]]:
    return {
        "info": ["info", str(data)],
        "train": ["train", "--data", str(data), "--model", "painn-tiny", "--steps", "1", "--out", str(out), "--quiet"],
        "evaluate": ["evaluate", str(checkpoint), "--data", str(data)],
        "label": ["label", str(data), "--teacher", "emt", "--out", str(out), "--quiet"],
        "jitter": ["jitter", "--in", str(data), "--norm", "0.05", "--teacher", "emt", "--out", str(out), "--quiet"],
    }


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("command", ("info", "train", "evaluate", "label", "jitter"))
def test_damaged_shard_is_named_in_one_line(good, checkpoint, tmp_path, capsys, how, command):
    data = damaged_copy(good, tmp_path, how)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(commands(data, out, checkpoint)[command]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "shards/shard-00000.aselmdb" in err and "augkd verify" in err, err
    assert not out.exists(), "nothing may be written for a damaged input"


def test_truncated_shard_does_not_crash_the_process(good, tmp_path):
    """What once was a bus error (exit 135) is a one-line message and exit status 2."""
    data = damaged_copy(good, tmp_path, "truncated")
    done = subprocess.run([sys.executable, "-m", "augkd.cli", "info", str(data)], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"augkd: error: {data}/shards/shard-00000.aselmdb is damaged "
        f"(size {(data / 'shards/shard-00000.aselmdb').stat().st_size}, manifest "
        f"{(good / 'shards/shard-00000.aselmdb').stat().st_size}): run augkd verify {data}"
    ]


def test_other_readers_leave_verify_content(good, tmp_path, capsys):
    import ase.db
    from fairchem.core.datasets import AseDBDataset

    data = tmp_path / "copy"
    shutil.copytree(good, data)
    shard = data / "shards" / "shard-00000.aselmdb"
    with ase.db.connect(str(shard)) as db:  # what a user does to look inside; leaves a -lock file behind
        assert len(list(db.select())) == 6
    AseDBDataset({"src": str(data / "shards")})[0]
    assert main(["verify", str(data)]) == 0, capsys.readouterr().err
    assert main(["info", str(data)]) == 0


def test_missing_path_is_named(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"augkd: error: {tmp_path / 'nope'} does not exist"


def test_foreign_file_is_not_a_dataset(tmp_path, capsys):
    foreign = tmp_path / "dft.extxyz"
    foreign.write_text("2\nLattice=\"5 0 0 0 5 0 0 0 5\" Properties=species:S:1:pos:R:3\nH 0 0 0\nH 0 0 0.7\n")
    for argv in (["info", str(foreign)], ["train", "--data", str(foreign), "--out", str(tmp_path / "r"), "--quiet"],
                 ["verify", str(foreign)], ["label", str(foreign), "--teacher", "emt", "--out", str(tmp_path / "l")]):
        assert main(argv) == 2
        assert capsys.readouterr().err.strip() == (
            f"augkd: error: {foreign} is not an augkd dataset; run: augkd import {foreign} --out DIR")
    assert not (tmp_path / "r").exists() and not (tmp_path / "l").exists()
