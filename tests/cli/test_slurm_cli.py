"""`augkd slurm submit` on the command line: a dry run prints a readable script and writes nothing; bad flags, a bad
template and sbatch's refusal are one line on stderr with exit status 2."""

import pytest

from augkd.cli import main
from conftest import small_generate_args


def test_sbatch_refusal_is_one_line_with_its_message(slurm, tmp_path, capsys):
    out = tmp_path / "refused"
    argv = ["slurm", "submit", *small_generate_args(out, "--partition", "nosuchpartition", shards=2)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("augkd: error: sbatch rejected") and "\n" not in err
    assert "partition" in err.lower()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--parallel", "0"], "--parallel 0 must be > 0"),
        (["--parallel", "-3"], "--parallel -3"),
    ],
)
def test_bad_submit_flags(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main(["slurm", "submit", *small_generate_args(out, *extra)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("augkd: error:") and "\n" not in err and message in err
    assert not out.exists()


def test_template_without_required_placeholders_is_refused(tmp_path, capsys):
    template = tmp_path / "mine.sbatch"
    template.write_text("#!/bin/bash\n#SBATCH --array={{array}}\nsrun hostname\n")
    out = tmp_path / "out"
    assert main(["slurm", "submit", *small_generate_args(out, "--template", str(template))]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(template) in err and "{{augkd}}" in err and "{{args}}" in err
    assert "{{array}}" not in err
    assert not out.exists()


def test_dry_run_prints_a_readable_script_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "dry"
    argv = ["slurm", "submit", *small_generate_args(out, "--parallel", "3", "--dry-run", "--gpus-per-task", "1",
                                                    "--partition", "gpu", systems=8, shards=5)]
    assert main(argv) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --array=0-4%3" in script and "#SBATCH --partition=gpu" in script
    assert "#SBATCH --gpus-per-task=1" in script and "{{" not in script
    assert f"--out {out}" in script and "--shard-index" in script
    assert not out.exists()
