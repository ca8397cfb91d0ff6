"""--threads reaches torch in every process that computes: in-process, local workers and Dask workers."""

from __future__ import annotations

import pytest

from augkd.distributed.jobs import LabelJob
from augkd.generators.label import LabelConfig
from augkd.io.dataset import read_frames
from conftest import run_job
from mixers.mixer_helpers import emt_frames, write_dataset


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("threads") / "src", emt_frames(4, "dft", 0), "dft", shards=2)


@pytest.mark.parametrize("execution", ({"workers": 1}, {"workers": 2}, {"executor": "dask", "workers": 2}),
                         ids=("in-process", "local-workers", "dask-workers"))
def test_threads_reach_the_computing_process(source, tmp_path, execution):
    import torch

    before = torch.get_num_threads()
    out = tmp_path / "labelled"
    config = LabelConfig(teacher="ase:fake_calculators.ThreadCountEMT", teacher_kwargs={}, atom_energy=False)
    run_job(LabelJob(source, config), out, threads=3, **execution)
    energies = {frame.data["teacher_energy"] for frame in read_frames(out)}
    assert energies == {3.0}  # what no default gives on this machine (2 cores: 2 in-process, 1 per worker)
    torch.set_num_threads(before)
