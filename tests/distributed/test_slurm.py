"""SLURM job arrays and a SLURMCluster-backed Dask run, against a real single-node SLURM that this module starts
with scripts/slurm-dev.sh (root + apt needed: skipped with the reason otherwise; CI runs as root)."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from augkd.cli import main
from conftest import small_generate_args
from generators.test_d1m import assert_same_rows, rows_of

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm-dev.sh"


@pytest.fixture(scope="module")
def slurm():
    """A running single-node SLURM; stopped afterwards only if this fixture started it."""
    if os.geteuid() != 0:
        pytest.skip("SLURM tests need root to install slurm-wlm/munge and start the daemons (scripts/slurm-dev.sh)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM tests need slurm-wlm installed or apt-get to install it")
    already = subprocess.run([str(SCRIPT), "status"], capture_output=True).returncode == 0
    if not already:
        done = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"scripts/slurm-dev.sh start failed:\n{done.stdout}\n{done.stderr}"
    yield
    if not already:
        subprocess.run([str(SCRIPT), "stop"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "d1M"
    assert main(small_generate_args(out)) == 0
    return out


def wait_for_job(job_id, timeout=300):
    """Until squeue lists no task of the job any more."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        listed = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i"], capture_output=True, text=True)
        if listed.returncode == 0 and not listed.stdout.strip():
            return
        time.sleep(1)
    raise AssertionError(f"job {job_id} still queued after {timeout}s")


def status_of(out, capsys):
    capsys.readouterr()
    assert main(["slurm", "status", str(out), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_array_cancel_status_resubmit_merge(slurm, reference, tmp_path, capsys):
    out = tmp_path / "array"
    argv = ["slurm", "submit", *small_generate_args(out, "--parallel", "2", "--time", "00:10:00", shards=4)]
    assert main(argv) == 0
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    assert len(jobs) == 1 and jobs[0]["array"] == "0-3%2"
    job_id = jobs[0]["job_id"]
    assert (out / "plan.json").is_file(), "the plan is written at submit time"
    script = (out / jobs[0]["script"]).read_text()
    assert "#SBATCH --array=0-3%2" in script and '--shard-index "$SLURM_ARRAY_TASK_ID"' in script
    # With at most 2 tasks at once, task 3 is still pending: cancel it, it never writes its shard.
    subprocess.run(["scancel", f"{job_id}_3"], check=True)
    wait_for_job(job_id)

    status = status_of(out, capsys)
    assert status["missing"] == [3] and status["complete"] == 3
    assert status["shards"][3]["state"] == "missing"
    assert status["shards"][0]["state"] == "complete"
    assert main(["merge", str(out)]) == 2
    assert "shards 3" in capsys.readouterr().err

    assert main(["slurm", "resubmit", str(out)]) == 0
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    assert len(jobs) == 2 and jobs[1]["array"] == "3%2" and jobs[1]["shards"] == [3]
    wait_for_job(jobs[1]["job_id"])
    assert status_of(out, capsys)["missing"] == []

    assert main(["merge", str(out)]) == 0
    assert main(["verify", str(out)]) == 0
    assert_same_rows(rows_of(reference), rows_of(out))


def test_sbatch_refusal_is_one_line_with_its_message(slurm, tmp_path, capsys):
    out = tmp_path / "refused"
    argv = ["slurm", "submit", *small_generate_args(out, "--partition", "nosuchpartition", shards=2)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("augkd: error: sbatch rejected") and "\n" not in err
    assert "partition" in err.lower()


def test_dask_workers_started_as_slurm_jobs(slurm, reference, tmp_path):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        "dask_cluster:\n  jobs: 2\n  cores: 1\n  memory: 4GB\n  walltime: '00:10:00'\n  interface: lo\n"
        "  death_timeout: 60\n"
        f"  local_directory: {tmp_path / 'dask-tmp'}\n  log_directory: {tmp_path / 'dask-logs'}\n"
    )
    out = tmp_path / "slurmcluster"
    assert main(small_generate_args(out, "--executor", "dask", "--cluster", str(cluster))) == 0
    assert_same_rows(rows_of(reference), rows_of(out))


# -- bad input, no SLURM needed ------------------------------------------------------------------------------------
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
