"""Dask scaling: generation throughput (systems/s) with 2 workers ÷ 1 worker, measured side by side; one JSON line.

Recipe: EMT teacher, small OC20-style adslabs, 24 systems in 12 shards (override with --systems/--shards).
Both runs use the same recipe on warm clusters: every worker has loaded the teacher and the slab enumerations are
cached beforehand (sampled once in this process), so what is timed is shards in → shards written. Cluster start-up
is reported separately. The load average is reported too: other processes on the machine skew the ratio.

    .venv/bin/python bench/dask_scaling.py [--systems 24] [--shards 12]
"""

from __future__ import annotations

import argparse
import json
import os
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


def timed_run(config, workers: int, folder: Path) -> dict:
    from distributed import Client

    from augkd.distributed.dask_executor import local_cluster, run_dask
    from augkd.distributed.jobs import GenerateJob
    from augkd.generators.d1m import prepare

    started = time.perf_counter()
    with local_cluster(workers, gpus=[]) as cluster, Client(cluster) as client:
        client.run(prepare, config)  # the teacher, once per worker, outside the timing
        ready = time.perf_counter()
        manifest = run_dask(GenerateJob(config), folder / f"workers-{workers}",
                            scheduler=cluster.scheduler_address, progress=False)
        seconds = time.perf_counter() - ready
    return {
        "workers": workers, "seconds": round(seconds, 2), "systems_per_s": round(config.systems / seconds, 3),
        "rows": manifest["totals"]["rows"], "startup_s": round(ready - started, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", type=int, default=24)
    parser.add_argument("--shards", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="augkd-dask-bench-") as tmp:
        folder = Path(tmp)
        os.environ.setdefault("AUGKD_SLAB_CACHE", str(folder / "slabs"))  # workers inherit it
        from augkd.generators.d1m import GenerateConfig, prepare

        config = GenerateConfig.from_dict(recipe(args.systems, args.shards))
        sampler = prepare(config).sampler
        for index in range(config.systems):  # fill the slab cache: neither run pays for slab enumeration
            sampler.sample(config.seed, index)
        one = timed_run(config, 1, folder)
        two = timed_run(config, 2, folder)
    assert one["rows"] == two["rows"], "the two runs must make the same dataset"
    print(json.dumps({
        "bench": "dask_scaling", "teacher": "emt", "systems": config.systems, "shards": config.shards,
        "cpu_count": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
        "one_worker": one, "two_workers": two,
        "speedup_2_over_1": round(two["systems_per_s"] / one["systems_per_s"], 3),
    }))


if __name__ == "__main__":
    main()
