"""SLURM job arrays and a SLURMCluster-backed Dask run, against a real single-node SLURM that the ``slurm`` fixture
(tests/conftest.py) starts with scripts/slurm-dev.sh (root + apt needed: skipped with the reason otherwise; CI runs
as root). The command line of `augkd slurm submit` (dry runs, bad flags): tests/cli/test_slurm_cli.py."""

import json
import subprocess
import time

import pytest

from augkd.cli import main
from conftest import run_job, small_generate_args, small_generate_job
from generators.test_d1m import assert_same_rows, rows_of

@pytest.fixture(scope="module")
def reference(small_d1m):
    return small_d1m()


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


def test_dask_workers_started_as_slurm_jobs(slurm, reference, tmp_path):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        "dask_cluster:\n  jobs: 2\n  cores: 1\n  memory: 4GB\n  walltime: '00:10:00'\n  interface: lo\n"
        "  death_timeout: 60\n"
        f"  local_directory: {tmp_path / 'dask-tmp'}\n  log_directory: {tmp_path / 'dask-logs'}\n"
    )
    out = tmp_path / "slurmcluster"
    run_job(small_generate_job(), out, executor="dask", cluster=str(cluster))
    assert_same_rows(rows_of(reference), rows_of(out))


# -- bad input, no SLURM needed ------------------------------------------------------------------------------------
