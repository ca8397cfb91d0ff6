"""Every executor runs every shard job: ``label`` (a job over an existing dataset's shards) gives the same rows
in-process, over Dask workers and shard by shard (SLURM array tasks + merge)."""

import pytest

from augkd.cli import main
from conftest import small_generate_args
from generators.test_d1m import assert_same_rows, rows_of


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("src") / "d1M"
    assert main(small_generate_args(out, shards=3)) == 0
    return out


def label_args(source, out, *extra):
    return ["label", str(source), "--teacher", "emt", "--out", str(out), "--quiet",
            *extra]


@pytest.fixture(scope="module")
def labelled(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("labelled") / "in-process"
    assert main(label_args(source, out)) == 0
    return out


def test_label_keeps_rows_and_adds_teacher_outputs(source, labelled):
    parents, rows = rows_of(source), rows_of(labelled)
    assert sorted(rows) == sorted(parents)
    for key, row in rows.items():
        assert row.data["teacher_name"] == "emt"
        assert row.energy == parents[key].energy and "teacher_atom_energy" not in row.data


def test_label_over_two_dask_workers_equals_in_process(source, labelled, tmp_path):
    out = tmp_path / "dask"
    assert main(label_args(source, out, "--executor", "dask", "--workers", "2")) == 0
    assert_same_rows(rows_of(labelled), rows_of(out))


def test_label_shard_by_shard_then_merge_equals_in_process(source, labelled, tmp_path, capsys):
    out = tmp_path / "tasks"
    for index in (2, 0, 1):
        assert main(label_args(source, out, "--shard-index", str(index))) == 0
    assert not (out / "manifest.json").exists()
    assert main(["merge", str(out)]) == 0
    assert_same_rows(rows_of(labelled), rows_of(out))
    capsys.readouterr()
    assert main(label_args(source, tmp_path / "bad", "--shard-index", "3")) == 2
    err = capsys.readouterr().err
    assert "--shard-index 3" in err and "0..2" in err and not (tmp_path / "bad").exists()


def test_slurm_array_of_a_label_job_runs_label_tasks(source, tmp_path, capsys):
    out = tmp_path / "array"
    assert main(["slurm", "submit", *label_args(source, out, "--dry-run", "--parallel", "2")]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --array=0-2%2" in script
    task = next(line for line in script.splitlines() if line.startswith("exec "))
    assert f" label {source.resolve()} --teacher emt --feature-dtype float16 --out {out.resolve()} --quiet" in task
    assert task.endswith('--shard-index "$SLURM_ARRAY_TASK_ID"')
    assert not out.exists()


def test_label_refuses_its_own_input_and_a_plain_directory(source, tmp_path, capsys):
    assert main(label_args(source, source)) == 2
    assert "must differ from the input" in capsys.readouterr().err
    plain = tmp_path / "plain"
    plain.mkdir()
    assert main(label_args(plain, tmp_path / "x")) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(plain) in err and not (tmp_path / "x").exists()


def test_label_asking_for_what_the_teacher_lacks_is_one_line_before_writing(source, tmp_path, capsys):
    out = tmp_path / "lacking"
    assert main(label_args(source, out, "--features", "atom_energy,node")) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "emt cannot provide 'atom_energy', 'node'" in err and not out.exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_a_job_for_gpu_workers_is_planned_on_a_host_without_gpus(source):
    """`--executor dask --device cuda` from a login node: the plan (teacher identity only) is made on the CPU here;
    the device is resolved by the workers that run the shards, and is not part of the plan."""
    from augkd.distributed.jobs import LabelJob
    from augkd.generators.label import LabelConfig

    config = LabelConfig(teacher="emt", teacher_kwargs={}, atom_energy=False)
    assert LabelJob(source, config, device="cuda").plan() == LabelJob(source, config, device="cpu").plan()
