"""Dask executor against a real LocalCluster on loopback (2 worker processes): same rows as in-process,
a SIGKILLed worker mid-run loses nothing and duplicates nothing, a rerun finishes only what is missing."""

import os
import signal

import pytest
import torch

from augkd.cli import build_parser, main
from augkd.io.dataset import load_manifest
from conftest import small_generate_args
from generators.test_d1m import assert_same_rows, rows_of


def job_of(argv):
    """The job that `augkd <argv>` would run, parsed exactly as the CLI does."""
    from augkd.cli import JOBS

    args, extra = build_parser().parse_known_args(argv)
    args.overrides = list(args.overrides) + extra
    return JOBS[args.command][1](args)[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "d1M"
    assert main(small_generate_args(out)) == 0
    return out


def test_two_dask_workers_give_the_in_process_rows_and_resume_redoes_only_missing(reference, tmp_path):
    out = tmp_path / "dask"
    assert main(small_generate_args(out, "--executor", "dask", "--workers", "2", shards=3)) == 0
    assert_same_rows(rows_of(reference), rows_of(out))
    assert main(["verify", str(out)]) == 0

    # The whole cluster died after shard 0 landed: shards 1 and 2 and the manifest are gone.
    for index in (1, 2):
        (out / "shards" / f"shard-{index:05d}.aselmdb").unlink()
        (out / "index" / f"shard-{index:05d}.json").unlink()
    (out / "manifest.json").unlink()
    kept = (out / "shards" / "shard-00000.aselmdb").stat()
    assert main(small_generate_args(out, "--executor", "dask", "--workers", "2", "--resume", shards=3)) == 0
    again = (out / "shards" / "shard-00000.aselmdb").stat()
    assert (again.st_ino, again.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns), "a complete shard was redone"
    assert_same_rows(rows_of(reference), rows_of(out))


def test_worker_killed_mid_run_loses_and_duplicates_nothing(reference, tmp_path):
    from distributed import Client

    from augkd.distributed.dask_executor import local_cluster, run_dask

    out = tmp_path / "killed"
    job = job_of(small_generate_args(out, shards=6))
    killed = []

    def kill_a_busy_worker(client, index, record):
        """After the first shard lands, SIGKILL a worker process that is in the middle of another shard."""
        if killed:
            return
        pids = client.run(os.getpid)
        busy = [address for address, keys in client.processing().items() if keys]
        assert busy, "no worker is busy: the kill would not land mid-shard"
        os.kill(pids[busy[0]], signal.SIGKILL)
        killed.append((busy[0], pids[busy[0]]))

    with local_cluster(2, gpus=[]) as cluster, Client(cluster) as watcher:
        assert {w["host"] for w in watcher.scheduler_info()["workers"].values()} == {"127.0.0.1"}
        manifest = run_dask(
            job, out, scheduler=cluster.scheduler_address, progress=False, callbacks=[kill_a_busy_worker],
        )
        assert killed, "the hook never ran"
        # the nanny restarted the killed process: still two workers, one with a new pid
        watcher.wait_for_workers(2, timeout=60)
        assert killed[0][1] not in watcher.run(os.getpid).values()
    assert [s["index"] for s in manifest["shards"]] == list(range(6))
    assert sorted(p.name for p in (out / "shards").iterdir()) == [f"shard-{i:05d}.aselmdb" for i in range(6)]
    assert not (out / "tmp").exists()
    assert_same_rows(rows_of(reference), rows_of(out))  # rows_of also refuses duplicate (sid, fid)
    assert load_manifest(out)["totals"]["rows"] == len(rows_of(out))


def test_unreachable_scheduler_is_one_line_naming_it(tmp_path, capsys):
    out = tmp_path / "none"
    address = "tcp://127.0.0.1:9"  # discard port: nothing listens
    args = small_generate_args(out, "--executor", "dask", "--scheduler", address)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("augkd: error:") and "\n" not in err and address in err
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--scheduler", "tcp://127.0.0.1:9"], "--scheduler and --cluster need --executor dask"),
        (["--executor", "dask", "--workers", "0"], "--workers 0"),
        (["--shard-index", "2"], "--shard-index 2 is outside 0..1"),
        (["--shard-index", "-1"], "--shard-index -1"),
        (["--resume"], "--resume"),
        (["--device", "tpu"], "--device 'tpu'"),
        pytest.param(["--device", "cuda"], "--device cuda: this process sees no CUDA device",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
        pytest.param(["--device", "cuda", "--workers", "2"], "--device cuda",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    ],
)
def test_bad_execution_flags_are_one_line_errors(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main(small_generate_args(out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("augkd: error:") and "\n" not in err and message in err
    assert not out.exists()


def test_single_shard_mode_writes_one_shard_and_no_manifest(reference, tmp_path):
    out = tmp_path / "one"
    assert main(small_generate_args(out, "--shard-index", "1")) == 0
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard-00001.aselmdb"]
    assert not (out / "manifest.json").exists()
    assert main(["merge", str(out)]) == 2
    assert main(small_generate_args(out, "--shard-index", "0")) == 0
    assert main(["merge", str(out)]) == 0
    assert_same_rows(rows_of(reference), rows_of(out))


def test_gpu_workers_are_pinned_to_one_gpu_each_and_every_shard_asks_for_one(reference, tmp_path):
    """The per-GPU cluster on GPU ids this CPU machine does not have: each worker sees only its own id in
    CUDA_VISIBLE_DEVICES and offers GPU=1; the executor then submits every shard with resources GPU=1 (so no
    worker runs two at once). The teacher resolves ``auto`` in the worker (the CPU here) and the rows are the
    in-process rows."""
    from distributed import Client

    from augkd.distributed.dask_executor import local_cluster, run_dask

    out = tmp_path / "gpus"
    job = job_of(small_generate_args(out, shards=3))
    restrictions = {}

    def record_restrictions(client, index, record):
        restrictions.update(client.run_on_scheduler(
            lambda dask_scheduler: {key: ts.resource_restrictions for key, ts in dask_scheduler.tasks.items()}
        ))

    with local_cluster(gpus=["0", "1"]) as cluster, Client(cluster) as watcher:
        workers = watcher.scheduler_info()["workers"].values()
        assert sorted(w["resources"]["GPU"] for w in workers) == [1, 1]
        assert {w["host"] for w in workers} == {"127.0.0.1"}
        visible = watcher.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(visible.values()) == ["0", "1"]
        run_dask(job, out, scheduler=cluster.scheduler_address, progress=False, callbacks=[record_restrictions])
    assert restrictions and all(value == {"GPU": 1} for value in restrictions.values()), restrictions
    assert_same_rows(rows_of(reference), rows_of(out))
