"""``--executor local|dask|slurm-array`` of generate, label and jitter: one entry point that hands a job's shards
to an executor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augkd.errors import ConfigError

from augkd.distributed.jobs import ShardJob

EXECUTORS = ("local", "dask", "slurm-array")


@dataclass
class ExecutionRequest:
    """How to run (never what is made: that is the job)."""

    executor: str = "local"
    workers: int | None = None  # local: processes (default 1); dask: workers (default: one per GPU, else per core)
    scheduler: str | None = None  # dask: address of an existing scheduler, tcp://host:port
    cluster: str | None = None  # dask: "local" (default), "slurm" (configs/distributed/slurm.yaml) or a yaml file
    shard_index: int | None = None  # write this one shard only, no manifest (what a SLURM array task runs)
    resume: bool = False  # refuse to start a new dataset: only finish the one in --out
    progress: bool = True
    threads: int | None = None  # torch threads per computing process (default: augkd.threads decides)


def distributed_config(name_or_file: str = "slurm") -> dict[str, Any]:
    """A file of configs/distributed/ by name, or any yaml file with the same sections."""
    import yaml

    from augkd.config import config_dir

    path = Path(name_or_file)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = config_dir() / "distributed" / f"{name_or_file}.yaml"
    if not path.is_file():
        raise ConfigError(f"--cluster {name_or_file}: no such cluster config ({path})")
    with open(path) as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping")
    return values


def execute(job: ShardJob, out: str | Path, request: ExecutionRequest,
            task_argv: list[str] | None = None) -> dict[str, Any]:
    """Run ``job`` into ``out`` as ``request`` says. Returns what was done:

    ``{"manifest": ...}`` (local, dask), ``{"shard": record}`` (single shard) or ``{"submission": ...}``
    (slurm-array; ``task_argv`` is then the job's command line for the tasks, subcommand first).
    """
    if request.executor not in EXECUTORS:
        raise ConfigError(f"--executor {request.executor!r}: expected one of {', '.join(EXECUTORS)}")
    if (request.scheduler or request.cluster) and request.executor != "dask":
        raise ConfigError("--scheduler and --cluster need --executor dask")
    if request.shard_index is not None:
        from augkd.distributed.local import write_one_shard

        return {"shard": write_one_shard(job, out, request.shard_index, request.threads)}
    if request.executor == "local":
        from augkd.distributed.local import run_local

        workers = request.workers if request.workers is not None else 1
        return {"manifest": run_local(job, out, workers, request.progress, request.resume, request.threads)}
    if request.executor == "dask":
        from augkd.distributed.dask_executor import run_dask

        cluster, options = request.cluster, None
        if cluster not in (None, "local"):
            options = distributed_config(cluster).get("dask_cluster", {})
            cluster = "slurm"
        manifest = run_dask(
            job, out, scheduler=request.scheduler, cluster=cluster, workers=request.workers,
            cluster_options=options, progress=request.progress, resume=request.resume, threads=request.threads,
        )
        return {"manifest": manifest}
    from augkd.distributed.slurm_array import ArrayOptions, submit_array

    options = ArrayOptions(**{k: v for k, v in distributed_config("slurm").get("array", {}).items() if v is not None})
    return {"submission": submit_array(job, out, task_argv or [], options)}
