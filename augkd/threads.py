"""How many CPU threads a computing process may use, decided once where the process starts.

On a shared node torch's default (every core of the machine) oversubscribes the cores a job was given, so the
default is what the scheduler granted: ``SLURM_CPUS_PER_TASK``, else the CPUs this process may run on (its affinity
mask, which cgroups and ``taskset`` narrow), shared between the processes started on this host.
"""

from __future__ import annotations

import os

from augkd.errors import ConfigError


def available_cpus() -> int:
    """CPUs granted to this process: SLURM's per-task count when set, else the affinity mask."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


def resolve_threads(requested: int | None = None, processes: int = 1) -> int:
    """``requested`` when given (≥ 1), else the granted CPUs divided among ``processes`` (at least 1)."""
    if requested is not None:
        if int(requested) < 1:
            raise ConfigError(f"--threads {requested}: must be at least 1")
        return int(requested)
    return max(1, available_cpus() // max(1, int(processes)))


def set_threads(requested: int | None = None, processes: int = 1) -> int:
    """Set torch's intra-op threads for this process; returns the number in force.

    ``requested`` is set as it is. Without it the process keeps its count unless that exceeds the CPUs granted to
    it (shared by ``processes``): a default never raises a count that somebody lowered on purpose.
    """
    import torch

    threads = resolve_threads(requested, processes)
    if requested is None:
        threads = min(threads, torch.get_num_threads())
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
