"""Dask scaling: generation throughput (systems/s) with 2 workers ÷ 1 worker, measured side by side; one JSON line.

Recipe: EMT teacher, small OC20-style adslabs, 24 systems in 24 shards (override with --systems/--shards; one
system per shard keeps the last shard's tail short). Every run uses the same recipe on a warm cluster: every worker
has loaded the teacher and the slab enumerations are cached beforehand (sampled once in this process), so what is
timed is shards in → shards written. Cluster start-up is reported separately.
The runs alternate 1, 2, 1, 2, ... workers (``--repeats`` each), so that a burst of load from elsewhere (this is a
VM with CPU steal) hits both; the speed-up is taken from each side's fastest run (as timeit does) and also reported
from the medians.

    .venv/bin/python bench/dask_scaling.py [--systems 24] [--shards 24] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.modules.setdefault("nvalchemiops", None)  # fairchem's warp backend warns about CUDA on CPU-only machines


def recipe(systems: int, shards: int) -> dict:
    return {
        "kind": "d1M", "seed": 7, "systems": systems, "shards": shards, "teacher": "emt",
        "systems_sampler": {"elements": ["Cu", "Pt", "O", "H", "C", "N"], "max_atoms": 60, "max_miller": 1},
        "relax": {"steps": 25, "fmax": 0.1},
        "filters": {"drop_anomalies": ["desorbed", "intercalated"]},
        "frames": {"fraction": 0.5, "keep_final": True},
    }


def timed_run(config, workers: int, folder: Path, run: int) -> dict:
    from distributed import Client

    from augkd.distributed.dask_executor import local_cluster, run_dask
    from augkd.distributed.jobs import GenerateJob
    from augkd.generators.d1m import prepare

    started = time.perf_counter()
    with local_cluster(workers, gpus=[]) as cluster, Client(cluster) as client:
        client.run(prepare, config)  # the teacher, once per worker, outside the timing
        ready = time.perf_counter()
        manifest = run_dask(GenerateJob(config), folder / f"workers-{workers}-run-{run}",
                            scheduler=cluster.scheduler_address, progress=False)
        seconds = time.perf_counter() - ready
    return {
        "workers": workers, "seconds": round(seconds, 2), "systems_per_s": round(config.systems / seconds, 3),
        "rows": manifest["totals"]["rows"], "startup_s": round(ready - started, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", type=int, default=24)
    parser.add_argument("--shards", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per worker count, alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="augkd-dask-bench-") as tmp:
        folder = Path(tmp)
        os.environ.setdefault("AUGKD_SLAB_CACHE", str(folder / "slabs"))  # workers inherit it
        from augkd.generators.d1m import GenerateConfig, prepare

        config = GenerateConfig.from_dict(recipe(args.systems, args.shards))
        sampler = prepare(config).sampler
        for index in range(config.systems):  # fill the slab cache: neither run pays for slab enumeration
            sampler.sample(config.seed, index)
        runs: dict[int, list[dict]] = {1: [], 2: []}
        for run in range(args.repeats):
            for workers in runs:
                runs[workers].append(timed_run(config, workers, folder, run))
    rows = {run["rows"] for side in runs.values() for run in side}
    assert len(rows) == 1, f"every run must make the same dataset (rows: {sorted(rows)})"
    best = {workers: min(run["seconds"] for run in side) for workers, side in runs.items()}
    median = {workers: statistics.median(run["seconds"] for run in side) for workers, side in runs.items()}
    print(json.dumps({
        "bench": "dask_scaling", "teacher": "emt", "systems": config.systems, "shards": config.shards,
        "rows": rows.pop(), "cpu_count": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
        "seconds": {"one_worker": [run["seconds"] for run in runs[1]], "two_workers": [run["seconds"] for run in runs[2]]},
        "startup_s": {"one_worker": runs[1][0]["startup_s"], "two_workers": runs[2][0]["startup_s"]},
        "speedup_2_over_1": round(best[1] / best[2], 3),
        "speedup_2_over_1_median": round(median[1] / median[2], 3),
    }))


if __name__ == "__main__":
    main()
