"""Run a shard job's shards as Dask tasks: on a local cluster, an existing scheduler, or workers started by SLURM.

One shard = one task, keyed ``shard-<i>``. Tasks run in worker *processes* with one thread each, so the per-process
caches of the generators load the teacher once per worker and never share it between threads.

Fault tolerance comes from three places, each doing one thing:
- a task that raises is retried ``retries`` times (``client.submit(retries=...)``);
- a worker that dies mid-task makes the scheduler run the task elsewhere, at most
  ``distributed.scheduler.allowed-failures`` times (then ``KilledWorker``);
- ``DatasetWriter.write_shard`` commits by hard link, so of two attempts at one shard exactly one lands, and a
  dead attempt's temp file is never counted. A rerun after the whole cluster died redoes only missing shards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from augkd.errors import AugkdError, ConfigError
from augkd.io.dataset import PLAN, DatasetError, DatasetWriter
from augkd.threads import resolve_threads

from augkd.distributed.jobs import ShardJob
from augkd.distributed.local import open_dataset, write_shard_of

DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds to reach an existing scheduler before giving up
DEFAULT_RETRIES = 2  # extra attempts of a shard whose task raised


class SchedulerUnreachable(AugkdError):
    """No Dask scheduler answered at the given address."""


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES's entries if set, else 0..n-1 from torch."""
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # no usable CUDA build: no GPUs
        count = 0
    if count == 0:
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()][:count]
    return [str(i) for i in range(count)]


def local_cluster(n_workers: int | None = None, host: str = "127.0.0.1", gpus: list[str] | None = None):
    """A cluster on this machine: one worker process per GPU (pinned, resource GPU=1), else one per CPU core.

    ``gpus=None`` detects them; ``[]`` forces CPU workers. Scheduler and workers listen on ``host`` only.
    """
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    gpus = visible_gpus() if gpus is None else gpus
    if not gpus:
        n_workers = n_workers or os.cpu_count() or 1
        return LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, host=host, dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    if n_workers is not None:
        gpus = gpus[:n_workers]
    # LocalCluster gives every worker the same environment; pinning needs one spec per GPU.
    workers = {
        f"gpu-{gpu}": {
            "cls": Nanny,
            "options": {
                "nthreads": 1, "host": host, "resources": {"GPU": 1}, "env": {"CUDA_VISIBLE_DEVICES": gpu},
            },
        }
        for gpu in gpus
    }
    scheduler = {"cls": Scheduler, "options": {"host": host, "dashboard_address": None}}
    return SpecCluster(workers=workers, scheduler=scheduler)


def slurm_cluster(options: dict[str, Any], jobs: int | None = None):
    """Dask workers started as SLURM jobs (``dask_jobqueue.SLURMCluster``), one worker process per job.

    ``options`` is the ``dask_cluster`` section of configs/distributed/slurm.yaml.
    """
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise AugkdError("--cluster slurm needs dask-jobqueue (pip install dask-jobqueue)") from None
    options = dict(options)
    gpus = int(options.pop("gpus_per_job", 0) or 0)
    jobs = jobs or int(options.pop("jobs", 1))
    options.pop("jobs", None)
    interface = options.pop("interface", None)
    directives = list(options.pop("job_extra_directives", None) or [])
    worker_args = list(options.pop("worker_extra_args", None) or [])
    prologue = list(options.pop("job_script_prologue", None) or [])
    if gpus:
        directives.append(f"--gpus-per-node={gpus}")
        worker_args += ["--resources", f"GPU={gpus}"]
    if "AUGKD_SLAB_CACHE" in os.environ:  # workers must share the submitter's slab cache
        prologue.append(f"export AUGKD_SLAB_CACHE={os.environ['AUGKD_SLAB_CACHE']}")
    options.setdefault("processes", 1)
    if interface:
        options["interface"] = interface
        options.setdefault("scheduler_options", {})["interface"] = interface
    cluster = SLURMCluster(
        job_extra_directives=directives, worker_extra_args=worker_args, job_script_prologue=prologue,
        python=sys.executable, **{k: v for k, v in options.items() if v is not None},
    )
    cluster.scale(jobs=jobs)
    return cluster


def connect(address: str, timeout: float = DEFAULT_CONNECT_TIMEOUT):
    """A client of an existing scheduler; unreachable → one-line error naming the address."""
    from distributed import Client

    try:
        return Client(address, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SchedulerUnreachable(
            f"--scheduler {address}: no Dask scheduler answered within {timeout:g}s ({reason})"
        ) from None


@contextlib.contextmanager
def _client(scheduler: str | None, cluster: str | None, workers: int | None, cluster_options: dict | None,
            connect_timeout: float) -> Iterator[tuple[Any, bool]]:
    """The client to use and whether its workers have GPUs; starts (and stops) a cluster when none is given."""
    from distributed import Client

    if scheduler and cluster:
        raise ConfigError("--scheduler and --cluster exclude each other: use an existing cluster or start one")
    if scheduler:
        client = connect(scheduler, connect_timeout)
        try:
            info = client.scheduler_info()
            gpu = any("GPU" in w.get("resources", {}) for w in info.get("workers", {}).values())
            yield client, gpu
        finally:
            client.close()
        return
    if cluster == "slurm":
        options = dict(cluster_options or {})
        gpu = bool(options.get("gpus_per_job"))
        started = slurm_cluster(options, workers)
    elif cluster in (None, "local"):
        gpus = visible_gpus()
        gpu = bool(gpus)
        started = local_cluster(workers, gpus=gpus)
    else:
        raise ConfigError(f"--cluster {cluster!r}: expected local or slurm")
    try:
        client = Client(started, set_as_default=False)
        try:
            yield client, gpu
        finally:
            client.close()
    finally:
        started.close()


def run_dask(
    job: ShardJob,
    out: str | Path,
    *,
    scheduler: str | None = None,
    cluster: str | None = None,
    workers: int | None = None,
    cluster_options: dict | None = None,
    retries: int = DEFAULT_RETRIES,
    progress: bool = True,
    resume: bool = False,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    callbacks: Sequence[Callable[[Any, int, dict], None]] = (),
    threads: int | None = None,
) -> dict[str, Any]:
    """Run every missing shard of ``job`` into ``out`` as Dask tasks and write the manifest; returns it.

    ``threads``: torch threads in each worker (default: a local cluster's workers share this machine's CPUs; a
    remote worker uses what its host granted it).

    ``callbacks``: each is called ``callback(client, index, record)`` as each shard lands (monitoring; the tests
    kill a worker from one).
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers} must be >= 1")
    out = str(out)
    # Refuse bad requests, and learn whether anything is left to do, before starting or reaching a cluster; and
    # reach the cluster before writing anything, so that an unreachable scheduler leaves no directory behind.
    job.check_output(out)
    probe = DatasetWriter(out, job.plan())
    probe.check()
    if resume and not (Path(out) / PLAN).is_file():
        raise DatasetError(f"--resume: {out} holds no dataset to resume (no {PLAN})")
    count = job.shard_count
    todo = probe.missing_shards(count) if (Path(out) / PLAN).is_file() else range(count)
    started = time.time()
    if not todo:
        return probe.finalize(count, {"seconds": 0.0})
    with _client(scheduler, cluster, workers, cluster_options, connect_timeout) as (client, gpu):
        writer, plan, missing = open_dataset(job, out, resume)
        resources = {"GPU": 1} if gpu else None
        if threads is None and scheduler is None and cluster in (None, "local"):
            threads = resolve_threads(None, len(client.scheduler_info().get("workers", {})) or 1)
        futures = [
            client.submit(
                write_shard_of, job, out, plan, index, None, threads, key=f"shard-{index}", pure=False,
                retries=retries, resources=resources,
            )
            for index in missing
        ]
        index_of = {future.key: index for future, index in zip(futures, missing)}
        bar = _ShardProgress(count, count - len(missing), enabled=progress)
        try:
            for future in as_completed(futures, loop=client.loop):
                try:
                    record = future.result()
                except KilledWorker as exc:
                    raise AugkdError(
                        f"shard {index_of[future.key]} lost its worker too often ({exc}); rerun the same "
                        f"command to finish the missing shards"
                    ) from None
                bar.shard_done(record["rows"])
                for callback in callbacks:
                    callback(client, index_of[future.key], record)
        finally:
            bar.close()
            for future in futures:
                future.cancel()  # after an error: stop the rest instead of leaving them running
        return writer.finalize(count, {"seconds": round(time.time() - started, 3)})


class _ShardProgress:
    """Live progress on stderr: shards done of all, rows kept, rows/s since start."""

    def __init__(self, total: int, done: int, enabled: bool):
        from tqdm import tqdm

        self.started = time.time()
        self.frames = 0
        self.bar = tqdm(
            total=total, initial=done, unit="shard", desc="shards", disable=not enabled, file=sys.stderr,
            dynamic_ncols=True,
        )

    def shard_done(self, frames: int) -> None:
        self.frames += frames
        rate = self.frames / max(time.time() - self.started, 1e-9)
        self.bar.set_postfix(rows=self.frames, rows_per_s=f"{rate:.1f}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
