"""Run a generator over all its shards on this machine: in-process, or over a pool of local processes.

Each shard is ``generate_shard(config, i)`` followed by an atomic write; complete shards are skipped, so
rerunning the same command after a crash finishes only what is missing.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable

from augkd.errors import ConfigError
from augkd.generators.d1m import GenerateConfig, generate_shard, prepare
from augkd.io.arrays import encode_array
from augkd.io.dataset import PLAN, DatasetError, DatasetWriter


def dataset_plan(config: GenerateConfig) -> dict[str, Any]:
    """What the dataset is, written first and compared on resume; ``prepare`` has loaded the teacher."""
    teacher = prepare(config).teacher
    return {
        "kind": config.kind,
        "origin": config.origin,
        "seed": config.seed,
        "systems": config.systems,
        "shard_count": config.shards,
        "teacher": teacher.identity.to_dict(),
        "config": config.to_dict(),
    }


def _write_one_shard(config: GenerateConfig, out: str, plan: dict, index: int, progress: Callable | None) -> dict:
    from threadpoolctl import threadpool_limits

    # Rows must not depend on where a shard ran. Multi-threaded BLAS sums in an order that depends on its thread
    # count (last-bit differences in BFGS steps, measured), and Dask workers run single-threaded BLAS, so every
    # executor relaxes with one BLAS thread; the matrices of a relaxation are small, it costs nothing.
    with threadpool_limits(limits=1, user_api="blas"):
        result = generate_shard(config, index, progress, encode=encode_array)
    return DatasetWriter(out, plan).write_shard(index, result.frames, result.stats).to_dict()


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)  # workers share the cores instead of each assuming it has them all


def _worker_task(config: GenerateConfig, out: str, plan: dict, index: int, queue) -> dict:
    return _write_one_shard(config, out, plan, index, lambda systems, frames: queue.put((systems, frames)))


def open_dataset(config: GenerateConfig, out: str | Path, resume: bool = False) -> tuple[DatasetWriter, dict, list[int]]:
    """Check ``out``, write its plan if new; returns the writer, the plan and the shard indices still to do.

    Every executor starts here, so that all of them refuse the same bad requests before writing anything.
    ``resume=True`` refuses a directory without a plan: the user meant to finish an existing dataset.
    """
    out = str(out)
    DatasetWriter(out, plan=None).check()
    if resume and not (Path(out) / PLAN).is_file():
        raise DatasetError(f"--resume: {out} holds no dataset to resume (no {PLAN})")
    plan = dataset_plan(config)
    writer = DatasetWriter(out, plan)
    writer.check()
    writer.open()
    return writer, plan, writer.missing_shards(config.shards)


def generate_one_shard(config: GenerateConfig, out: str | Path, shard_index: int) -> dict[str, Any]:
    """Single-shard mode (one SLURM array task): write shard ``shard_index`` only; the manifest is ``merge``'s job.

    Returns the shard's record; a shard that is already complete is left as it is.
    """
    if not 0 <= shard_index < config.shards:
        raise ConfigError(f"--shard-index {shard_index} is outside 0..{config.shards - 1} (--shards {config.shards})")
    writer, plan, _ = open_dataset(config, out)
    landed = writer.complete_shard(shard_index)
    if landed is not None:
        return landed.to_dict()
    return _write_one_shard(config, str(out), plan, shard_index, None)


def run_generate(
    config: GenerateConfig, out: str | Path, workers: int = 1, progress: bool = True, resume: bool = False
) -> dict[str, Any]:
    """Generate every missing shard of ``config`` into ``out`` and write the manifest; returns the manifest."""
    if workers < 1:
        raise ConfigError(f"--workers {workers} must be >= 1")
    out = str(out)
    # Everything that can reject the request does so before anything is written.
    writer, plan, missing = open_dataset(config, out, resume)
    todo_systems = sum(len(config.shard_systems(i)) for i in missing)
    bar = _progress_bar(config.systems, config.systems - todo_systems, enabled=progress)
    frames_kept = 0

    def advance(systems: int, frames: int) -> None:
        nonlocal frames_kept
        frames_kept += frames
        bar.update(systems)
        bar.set_postfix(frames_kept=frames_kept, refresh=False)

    started = time.time()
    if workers == 1 or len(missing) <= 1:
        for index in missing:
            _write_one_shard(config, out, plan, index, advance)
    else:
        context = multiprocessing.get_context("spawn")  # torch and fork do not mix
        with context.Manager() as manager, ProcessPoolExecutor(
            min(workers, len(missing)), mp_context=context, initializer=_init_worker,
            initargs=(max(1, (os.cpu_count() or 1) // workers),),
        ) as pool:
            queue = manager.Queue()
            futures = [pool.submit(_worker_task, config, out, plan, i, queue) for i in missing]
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
    return writer.finalize(config.shards, {"generation_seconds": round(time.time() - started, 3)})


def _progress_bar(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, initial=done, unit="system", desc="relaxing", disable=not enabled, file=sys.stderr,
        dynamic_ncols=True,
    )
