"""Every executor runs every shard job: ``label`` (a job over an existing dataset's shards) gives the same rows
in-process, over Dask workers and shard by shard (SLURM array tasks + merge)."""

import pytest

from augkd.cli import main
from augkd.distributed.jobs import LabelJob
from augkd.distributed.merge import merge_dataset
from augkd.generators.label import LabelConfig
from conftest import run_job
from generators.test_d1m import assert_same_rows, rows_of


@pytest.fixture(scope="module")
def source(small_d1m):
    return small_d1m(shards=3)


def label_job(source):
    """The job of `augkd label SOURCE --teacher emt` (energy and forces, no features)."""
    return LabelJob(source, LabelConfig(teacher="emt", teacher_kwargs={}, atom_energy=False))


def label_args(source, out, *extra):
    return ["label", str(source), "--teacher", "emt", "--out", str(out), "--quiet",
            *extra]


@pytest.fixture(scope="module")
def labelled(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("labelled") / "in-process"
    run_job(label_job(source), out)
    return out


def test_label_keeps_rows_and_adds_teacher_outputs(source, labelled):
    parents, rows = rows_of(source), rows_of(labelled)
    assert sorted(rows) == sorted(parents)
    for key, row in rows.items():
        assert row.data["teacher_name"] == "emt"
        assert row.energy == parents[key].energy and "teacher_atom_energy" not in row.data


def test_label_over_two_dask_workers_equals_in_process(source, labelled, tmp_path):
    out = tmp_path / "dask"
    run_job(label_job(source), out, executor="dask", workers=2)
    assert_same_rows(rows_of(labelled), rows_of(out))


def test_label_shard_by_shard_then_merge_equals_in_process(source, labelled, tmp_path, capsys):
    out = tmp_path / "tasks"
    for index in (2, 0, 1):
        run_job(label_job(source), out, shard_index=index)
    assert not (out / "manifest.json").exists()
    merge_dataset(out)
    assert_same_rows(rows_of(labelled), rows_of(out))
    capsys.readouterr()
    assert main(label_args(source, tmp_path / "bad", "--shard-index", "3")) == 2
    err = capsys.readouterr().err
    assert "--shard-index 3" in err and "0..2" in err and not (tmp_path / "bad").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_a_job_for_gpu_workers_is_planned_on_a_host_without_gpus(source):
    """`--executor dask --device cuda` from a login node: the plan (teacher identity only) is made on the CPU here;
    the device is resolved by the workers that run the shards, and is not part of the plan."""
    from augkd.distributed.jobs import LabelJob
    from augkd.generators.label import LabelConfig

    config = LabelConfig(teacher="emt", teacher_kwargs={}, atom_energy=False)
    assert LabelJob(source, config, device="cuda").plan() == LabelJob(source, config, device="cpu").plan()
