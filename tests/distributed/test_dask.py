"""Dask executor against a real LocalCluster on loopback (2 worker processes): same rows as in-process,
a SIGKILLed worker mid-run loses nothing and duplicates nothing, a rerun finishes only what is missing."""

import os
import signal

import pytest

from augkd.distributed.merge import merge_dataset
from augkd.errors import AugkdError
from augkd.io.dataset import load_manifest, verify_dataset
from conftest import run_job, small_generate_job
from generators.test_d1m import assert_same_rows, rows_of


@pytest.fixture(scope="module")
def reference(small_d1m):
    return small_d1m()


def test_two_dask_workers_give_the_in_process_rows_and_resume_redoes_only_missing(reference, tmp_path):
    out = tmp_path / "dask"
    run_job(small_generate_job(shards=3), out, executor="dask", workers=2)
    assert_same_rows(rows_of(reference), rows_of(out))
    assert verify_dataset(out) == []

    # The whole cluster died after shard 0 landed: shards 1 and 2 and the manifest are gone.
    for index in (1, 2):
        (out / "shards" / f"shard-{index:05d}.aselmdb").unlink()
        (out / "index" / f"shard-{index:05d}.json").unlink()
    (out / "manifest.json").unlink()
    kept = (out / "shards" / "shard-00000.aselmdb").stat()
    run_job(small_generate_job(shards=3), out, executor="dask", workers=2, resume=True)
    again = (out / "shards" / "shard-00000.aselmdb").stat()
    assert (again.st_ino, again.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns), "a complete shard was redone"
    assert_same_rows(rows_of(reference), rows_of(out))


def test_worker_killed_mid_run_loses_and_duplicates_nothing(reference, tmp_path):
    from distributed import Client

    from augkd.distributed.dask_executor import local_cluster, run_dask

    out = tmp_path / "killed"
    job = small_generate_job(shards=6)
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


def test_single_shard_mode_writes_one_shard_and_no_manifest(reference, tmp_path):
    out = tmp_path / "one"
    run_job(small_generate_job(), out, shard_index=1)
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard-00001.aselmdb"]
    assert not (out / "manifest.json").exists()
    with pytest.raises(AugkdError):  # what `augkd merge` reports with exit status 2
        merge_dataset(out)
    run_job(small_generate_job(), out, shard_index=0)
    merge_dataset(out)
    assert_same_rows(rows_of(reference), rows_of(out))


def test_gpu_workers_are_pinned_to_one_gpu_each_and_every_shard_asks_for_one(reference, tmp_path):
    """The per-GPU cluster on GPU ids this CPU machine does not have: each worker sees only its own id in
    CUDA_VISIBLE_DEVICES and offers GPU=1; the executor then submits every shard with resources GPU=1 (so no
    worker runs two at once). The teacher resolves ``auto`` in the worker (the CPU here) and the rows are the
    in-process rows."""
    from distributed import Client

    from augkd.distributed.dask_executor import local_cluster, run_dask

    out = tmp_path / "gpus"
    job = small_generate_job(shards=3)
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
