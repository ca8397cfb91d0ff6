"""`augkd jitter`: the jitter generator run as a shard job — deterministic, executor-independent, and its output a
mixer source for `augkd train` (bad input, and a killed adversarial run resumed: tests/cli/test_jitter_cli.py)."""

import numpy as np
import pytest

from augkd.io.dataset import load_manifest, read_frames
from conftest import run_job, train_run
from generators.jitter_helpers import NORM, jitter_job, rows_by_copy
from generators.test_d1m import assert_same_rows


@pytest.fixture(scope="module")
def source(small_d1m):
    return small_d1m(frames__fraction=0.2, shards=3)


@pytest.fixture(scope="module")
def rattled(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("rattled") / "rattle"
    run_job(jitter_job(source), out)
    return out


def test_rattle_copies_every_row_moving_free_atoms_exactly_norm(source, rattled):
    parents = {(f.data["sid"], f.data["fid"]): f for f in read_frames(source)}
    rows = rows_by_copy(rattled)
    assert sorted(rows) == sorted((sid, fid, copy) for sid, fid in parents for copy in range(2))
    for (sid, fid, _), row in rows.items():
        parent = parents[(sid, fid)]
        moved = np.linalg.norm(row.atoms.positions - parent.atoms.positions, axis=1)
        np.testing.assert_allclose(moved[~parent.fixed], NORM, atol=1e-6)
        assert (moved[parent.fixed] == 0).all()
        assert row.data["origin"] == "rattle" and row.data["jitter_norm"] == NORM
        assert row.data["teacher"] == "emt" or row.energy != parent.energy  # labelled anew by the teacher
    manifest = load_manifest(rattled)
    assert manifest["origin"] == "rattle" and manifest["jitter"]["copies"] == 2
    assert manifest["totals"]["rows"] == 2 * len(parents)


def test_same_seed_same_rows_whatever_the_executor(source, rattled, tmp_path):
    for name, extra in (("again", {}), ("pool", {"workers": 2}), ("dask", {"executor": "dask", "workers": 2})):
        out = tmp_path / name
        run_job(jitter_job(source), out, **extra)
        assert_same_rows(rows_by_copy(rattled), rows_by_copy(out))


def test_output_loads_in_fairchem_and_trains_as_a_mixer_source(source, rattled, tmp_path):
    from fairchem.core.datasets import AseDBDataset

    dataset = AseDBDataset({"src": str(rattled / "shards")})
    assert len(dataset) == load_manifest(rattled)["totals"]["rows"]
    run = tmp_path / "run"
    train_run(run, data__sources=[{"path": str(source), "origin": "dft"}, {"path": str(rattled), "origin": "rattle"}],
              model__name="painn-tiny", steps=2, batch_size=4)
    assert "loss_energy_rattle" in (run / "train.csv").read_text().splitlines()[0]


