"""aselmdb → legacy OCP LMDB → aselmdb round trip (refusals on the command line: tests/cli/test_datasets_cli.py)."""

import os

import numpy as np
import pytest
from ase.build import add_adsorbate, fcc111
from ase.constraints import FixAtoms

from augkd.io.convert import convert
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
    convert(dataset, legacy, to="ocp-lmdb")
    assert sorted(os.listdir(legacy)) == ["data.0000.lmdb", "data.0001.lmdb"]
    convert(legacy, back, to="aselmdb")
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


