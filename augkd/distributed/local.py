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
from augkd.io.dataset import DatasetWriter


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
    result = generate_shard(config, index, progress)
    return DatasetWriter(out, plan).write_shard(index, result.frames, result.stats).to_dict()


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)  # workers share the cores instead of each assuming it has them all


def _worker_task(config: GenerateConfig, out: str, plan: dict, index: int, queue) -> dict:
    return _write_one_shard(config, out, plan, index, lambda systems, frames: queue.put((systems, frames)))


def run_generate(config: GenerateConfig, out: str | Path, workers: int = 1, progress: bool = True) -> dict[str, Any]:
    """Generate every missing shard of ``config`` into ``out`` and write the manifest; returns the manifest."""
    if workers < 1:
        raise ConfigError(f"--workers {workers} must be >= 1")
    out = str(out)
    # Everything that can reject the request does so before anything is written.
    DatasetWriter(out, plan=None).check()
    plan = dataset_plan(config)
    writer = DatasetWriter(out, plan)
    writer.check()
    writer.open()
    missing = writer.missing_shards(config.shards)
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
