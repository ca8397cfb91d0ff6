"""aselmdb → legacy OCP LMDB → aselmdb round trip through the CLI."""

import os
import pickle

import lmdb
import numpy as np
import pytest
from ase.build import add_adsorbate, fcc111
from ase.constraints import FixAtoms

from augkd.cli import main
from augkd.io.dataset import DatasetWriter, load_manifest, read_frames
from augkd.records import LabelledFrame


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    frames = []
    for i in range(7):
        atoms = fcc111("Pt", (2, 2, 3), vacuum=9.0)
        add_adsorbate(atoms, "O", 1.7, "hcp")
        atoms.set_tags([0] * 4 + [0] * 4 + [1] * 4 + [2])
        atoms.set_constraint(FixAtoms(indices=range(8)))
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        data = {"sid": f"d1M-0-{i // 3}", "fid": i % 3, "origin": "synthetic", "teacher": "emt",
                "system_seed": 1000 + i, "relax_step": i % 3}
        frames.append(LabelledFrame(atoms, float(rng.normal() * 10), rng.normal(size=(13, 3)), data))
    path = tmp_path / "src"
    writer = DatasetWriter(path, {"kind": "test", "shard_count": 2})
    writer.open()
    writer.write_shard(0, frames[:4], {})
    writer.write_shard(1, frames[4:], {})
    writer.finalize(2, {})
    return path


def test_round_trip_preserves_everything(dataset, tmp_path):
    legacy = tmp_path / "legacy"
    back = tmp_path / "back"
    assert main(["convert", str(dataset), "--to", "ocp-lmdb", "--out", str(legacy)]) == 0
    assert sorted(os.listdir(legacy)) == ["data.0000.lmdb", "data.0001.lmdb"]
    assert main(["convert", str(legacy), "--to", "aselmdb", "--out", str(back)]) == 0
    assert load_manifest(back)["totals"]["rows"] == 7
    original, converted = list(read_frames(dataset)), list(read_frames(back))
    assert len(original) == len(converted)
    for a, b in zip(original, converted):
        # OCP v1 stores float32, as OC20 did
        np.testing.assert_allclose(b.atoms.positions, a.atoms.positions, atol=1e-5)
        np.testing.assert_allclose(b.atoms.cell, a.atoms.cell, atol=1e-5)
        np.testing.assert_array_equal(b.atoms.numbers, a.atoms.numbers)
        np.testing.assert_array_equal(b.atoms.get_tags(), a.atoms.get_tags())
        np.testing.assert_array_equal(b.fixed, a.fixed)
        np.testing.assert_array_equal(b.atoms.pbc, a.atoms.pbc)
        assert b.energy == pytest.approx(a.energy, abs=1e-5)
        np.testing.assert_allclose(b.forces, a.forces, atol=1e-5)
        for key in ("sid", "fid", "origin", "teacher", "system_seed", "relax_step"):
            assert b.data[key] == a.data[key]


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
