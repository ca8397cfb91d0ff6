"""Looking at datasets from the command line: `augkd info` (what it prints, as text and JSON, for a generated and a
labelled dataset), `augkd verify` (exit status 1 naming the damaged shard), `augkd convert` (one-line refusals that
leave nothing behind)."""

from __future__ import annotations

import json
import os
import pickle

import lmdb
import pytest

from augkd.cli import main
from augkd.io.dataset import load_manifest
from mixers.mixer_helpers import emt_dataset


@pytest.fixture
def reference(small_d1m):
    return small_d1m()


def test_info_shows_labeller_and_cached_outputs(tmp_path, capsys):
    data = emt_dataset(tmp_path / "dft", rows=4, origin="dft")
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "painn-tiny", "--steps", "1", "--out", str(run),
                 "--quiet"]) == 0
    ckpt = run / "checkpoints" / "final.pt"
    labelled = tmp_path / "labelled"
    assert main(["label", str(data), "--teacher", f"ckpt:{ckpt}", "--features", "atom_energy,node",
                 "--out", str(labelled), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["info", str(labelled), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["labelled_by"].startswith("ckpt:") or "painn-tiny" in info["labelled_by"]
    assert info["cached_outputs"]["node"] == "float16 (32,)"
    assert info["cached_outputs"]["atom_energy"] == "float32 ()"
    assert main(["info", str(labelled)]) == 0
    text = capsys.readouterr().out
    assert "labelled by" in text and "node (float16 (32,))" in text


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


def test_disallowed_pickle_is_refused_and_nothing_is_left(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    legacy = tmp_path / "evil.lmdb"
    env = lmdb.open(str(legacy), subdir=False, map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"0", pickle.dumps(Payload()))
        txn.put(b"length", pickle.dumps(1))
    env.close()
    out = tmp_path / "out"
    assert main(["convert", str(legacy), "--to", "aselmdb", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "refusing" in err and "system" in err and "\n" not in err
    assert not (tmp_path / "pwned").exists()
    assert not out.exists()


def test_convert_refuses_bad_input(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing"), "--to", "aselmdb", "--out", str(tmp_path / "o")]) == 2
    assert "missing" in capsys.readouterr().err
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    assert main(["convert", str(incomplete), "--to", "ocp-lmdb", "--out", str(tmp_path / "o2")]) == 2
    assert "not an augkd dataset" in capsys.readouterr().err
