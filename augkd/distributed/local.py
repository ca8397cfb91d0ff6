"""Run a shard job over all its shards on this machine: in-process, or over a pool of local processes.

Each shard is ``job.run_shard(i)`` followed by an atomic write; complete shards are skipped, so rerunning the
same command after a crash finishes only what is missing. Every executor shares ``open_dataset`` and
``write_shard_of`` from here.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable

from augkd.errors import ConfigError
from augkd.io.dataset import PLAN, DatasetError, DatasetWriter
from augkd.teachers import resolve_device
from augkd.threads import resolve_threads, set_threads

from augkd.distributed.jobs import ShardJob


def write_shard_of(job: ShardJob, out: str, plan: dict, index: int, progress: Callable | None,
                   threads: int | None = None) -> dict:
    """Run shard ``index`` of ``job`` and commit it; an attempt that finds it already landed leaves it as it is.

    ``threads``: torch threads of the process that computes (None: what this host granted it, see augkd.threads).
    """
    from threadpoolctl import threadpool_limits

    set_threads(threads)
    landed = DatasetWriter(out, plan).complete_shard(index)
    if landed is not None:
        return landed.to_dict()
    # Rows must not depend on where a shard ran. Multi-threaded BLAS sums in an order that depends on its thread
    # count (last-bit differences in BFGS steps, measured), and Dask workers run single-threaded BLAS, so every
    # executor runs with one BLAS thread; the matrices of a relaxation are small, it costs nothing.
    with threadpool_limits(limits=1, user_api="blas"):
        result = job.run_shard(index, progress)
    return DatasetWriter(out, plan).write_shard(index, result.frames, result.stats).to_dict()


def _worker_task(job: ShardJob, out: str, plan: dict, index: int, queue, threads: int) -> dict:
    return write_shard_of(job, out, plan, index, lambda units, rows: queue.put((units, rows)), threads)


def open_dataset(job: ShardJob, out: str | Path, resume: bool = False) -> tuple[DatasetWriter, dict, list[int]]:
    """Check ``out``, write its plan if new; returns the writer, the plan and the shard indices still to do.

    Every executor starts here, so that all of them refuse the same bad requests before writing anything.
    ``resume=True`` refuses a directory without a plan: the user meant to finish an existing dataset.
    """
    out = str(out)
    job.check_output(out)
    DatasetWriter(out, plan=None).check()
    if resume and not (Path(out) / PLAN).is_file():
        raise DatasetError(f"--resume: {out} holds no dataset to resume (no {PLAN})")
    plan = job.plan()
    writer = DatasetWriter(out, plan)
    writer.check()
    writer.open()
    return writer, plan, writer.missing_shards(job.shard_count)


def check_shard_index(job: ShardJob, index: int) -> None:
    if not 0 <= index < job.shard_count:
        raise ConfigError(f"--shard-index {index} is outside 0..{job.shard_count - 1} ({job.shard_count} shards)")


def write_one_shard(job: ShardJob, out: str | Path, shard_index: int, threads: int | None = None) -> dict[str, Any]:
    """Single-shard mode (one SLURM array task): write shard ``shard_index`` only; the manifest is ``merge``'s job.

    Returns the shard's record; a shard that is already complete is left as it is.
    """
    check_shard_index(job, shard_index)
    resolve_device(job.device)  # the shard runs here: refuse a device this process lacks before writing anything
    _, plan, _ = open_dataset(job, out)
    return write_shard_of(job, str(out), plan, shard_index, None, threads)


def run_local(
    job: ShardJob, out: str | Path, workers: int = 1, progress: bool = True, resume: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run every missing shard of ``job`` into ``out`` and write the manifest; returns the manifest.

    ``threads``: torch threads per process (default: the CPUs granted to this process shared by the workers).
    """
    if workers < 1:
        raise ConfigError(f"--workers {workers} must be >= 1")
    if workers > 1 or threads is not None:
        threads = resolve_threads(threads, workers)
    out = str(out)
    # Everything that can reject the request does so before anything is written.
    resolve_device(job.device)  # shards run here or in child processes, which see the same devices
    writer, plan, missing = open_dataset(job, out, resume)
    total = sum(job.units(i) for i in range(job.shard_count))
    bar = progress_bar(total, total - sum(job.units(i) for i in missing), job.unit, enabled=progress)
    rows_kept = 0

    def advance(units: int, rows: int) -> None:
        nonlocal rows_kept
        rows_kept += rows
        bar.update(units)
        bar.set_postfix(rows=rows_kept, refresh=False)

    started = time.time()
    if workers == 1 or len(missing) <= 1:
        for index in missing:
            write_shard_of(job, out, plan, index, advance, threads)
    else:
        context = multiprocessing.get_context("spawn")  # torch and fork do not mix
        with context.Manager() as manager, ProcessPoolExecutor(
            min(workers, len(missing)), mp_context=context,
        ) as pool:
            queue = manager.Queue()
            futures = [pool.submit(_worker_task, job, out, plan, i, queue, threads) for i in missing]
            pending = set(futures)
            while pending:
                while not queue.empty():
                    advance(*queue.get())
                pending = {f for f in pending if not f.done()}
                time.sleep(0.2)
            while not queue.empty():
                advance(*queue.get())
            for future in as_completed(futures):
                future.result()  # re-raise a worker's exception
    bar.close()
    return writer.finalize(job.shard_count, {"seconds": round(time.time() - started, 3)})


def progress_bar(total: int, done: int, unit: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, initial=done, unit=unit, desc=unit + "s", disable=not enabled, file=sys.stderr,
        dynamic_ncols=True,
    )
