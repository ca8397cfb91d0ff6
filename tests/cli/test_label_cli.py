"""`augkd label` on the command line: the task command line of its SLURM array, and refusals that are one line on
stderr and write nothing."""

import pytest

from augkd.cli import main


@pytest.fixture
def source(small_d1m):
    return small_d1m(shards=3)


def label_args(source, out, *extra):
    return ["label", str(source), "--teacher", "emt", "--out", str(out), "--quiet",
            *extra]


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


def test_label_flags_build_the_job_of_the_stage_tests(source, tmp_path):
    """tests/distributed/test_jobs.py builds `augkd label SOURCE --teacher emt`'s job without the command line."""
    from augkd.cli import JOBS, build_parser
    from augkd.distributed.jobs import LabelJob
    from augkd.generators.label import LabelConfig

    job, _ = JOBS["label"][1](build_parser().parse_args(label_args(source, tmp_path / "out")))
    assert job == LabelJob(source, LabelConfig(teacher="emt", teacher_kwargs={}, atom_energy=False))
