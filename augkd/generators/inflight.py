"""In-flight batching: which waiting systems join a running batch, and how large a batch may grow.

A batch is bounded by a memory proxy: atoms (``max_atoms``), neighbour pairs within the teacher's cutoff
(``max_edges``) and/or systems (``max_systems``). Systems join strictly in queue order: when the next one does not
fit, nobody jumps the queue, so the batches a run forms depend only on the systems, the limits and when systems
finish. A system too large for the limits on its own still runs, alone.

``max_atoms="auto"`` measures on the device. First memory: the teacher's memory per atom from two small probe passes
(CUDA: the caching allocator's peak; CPU: the peak resident memory) gives the most atoms that fit in
``memory_fraction`` of what is free. Nothing is grown until it fails: a shared GPU is never pushed into an
out-of-memory error on purpose. Then speed: passes of 1, 2, 4, ... copies of a typical system, within that memory
cap, are timed, and the size with the most atoms per second wins. On a GPU that is usually the largest size; on a
CPU a wide model's per-atom cost rises once its per-edge tensors outgrow the caches (PaiNN at 512 channels: 250
atoms/s at 58 atoms, 100 atoms/s from 116 on this project's 2-core machine), so there small batches win. ``calibrate``
does both, once per model, device and system sizes in a process.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from augkd.errors import ConfigError

AUTO = "auto"


@dataclass(frozen=True)
class BatchConfig:
    """Limits of one forward pass of the batched relaxer (None: no limit of that kind)."""

    max_atoms: int | str | None = 1024  # atoms, or "auto" (the fastest within memory, measured on the device)
    max_edges: int | None = None  # neighbour pairs within the teacher's cutoff (counted once per system)
    max_systems: int | None = None
    edge_cutoff: float | None = None  # Å, for counting edges; None: the teacher's own cutoff
    memory_fraction: float = 0.8  # "auto": share of the free device memory a batch may use

    def __post_init__(self) -> None:
        if not (self.max_atoms is None or self.max_atoms == AUTO or (isinstance(self.max_atoms, int) and self.max_atoms > 0)):
            raise ConfigError(f"batch max_atoms={self.max_atoms!r} must be a positive integer, 'auto' or null")
        for name in ("max_edges", "max_systems"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value > 0):
                raise ConfigError(f"batch {name}={value!r} must be a positive integer or null")
        if self.edge_cutoff is not None and not self.edge_cutoff > 0:
            raise ConfigError(f"batch edge_cutoff={self.edge_cutoff} must be > 0")
        if not 0 < self.memory_fraction <= 1:
            raise ConfigError(f"batch memory_fraction={self.memory_fraction} must be in (0, 1]")


@dataclass(frozen=True)
class SystemCost:
    atoms: int
    edges: int = 0


def count_edges(atoms: Atoms, cutoff: float, max_neighbors: int | None = None) -> int:
    """Directed neighbour pairs within ``cutoff`` (periodic images included), at most ``max_neighbors`` per atom."""
    from ase.neighborlist import neighbor_list

    centres = neighbor_list("i", atoms, cutoff)
    per_atom = np.bincount(centres, minlength=len(atoms))
    if max_neighbors is not None:
        per_atom = np.minimum(per_atom, max_neighbors)
    return int(per_atom.sum())


class InFlightBatcher:
    """The queue of waiting systems and the limits a running batch must respect."""

    def __init__(
        self,
        costs: Sequence[SystemCost],
        max_atoms: int | None,
        max_edges: int | None = None,
        max_systems: int | None = None,
    ):
        self.costs = list(costs)
        self.max_atoms = max_atoms
        self.max_edges = max_edges
        self.max_systems = max_systems
        self.waiting: deque[int] = deque(range(len(self.costs)))

    def __bool__(self) -> bool:
        return bool(self.waiting)

    def admit(self, atoms: int, edges: int, systems: int) -> list[int]:
        """Indices of the waiting systems that join a batch now holding ``atoms``/``edges``/``systems``."""
        joined = []
        while self.waiting:
            cost = self.costs[self.waiting[0]]
            fits = (
                (self.max_atoms is None or atoms + cost.atoms <= self.max_atoms)
                and (self.max_edges is None or edges + cost.edges <= self.max_edges)
                and (self.max_systems is None or systems + 1 <= self.max_systems)
            )
            if not fits and systems > 0:
                break
            joined.append(self.waiting.popleft())
            atoms, edges, systems = atoms + cost.atoms, edges + cost.edges, systems + 1
            if not fits:  # an oversized system runs alone
                break
        return joined


@dataclass(frozen=True)
class MemoryEstimate:
    """Linear fit of a forward pass's peak memory: ``fixed + per_atom · atoms`` bytes, and what is free."""

    per_atom: float
    fixed: float
    free: float

    def max_atoms(self, fraction: float) -> int:
        return int((fraction * self.free - self.fixed) // max(self.per_atom, 1.0))


def fastest_size(rate: Callable[[int], float], sizes: Sequence[int], give_up: float = 0.8) -> tuple[int, dict[int, float]]:
    """The size with the highest ``rate(size)``, trying ``sizes`` in increasing order, and every rate measured.

    Stops at the first size whose rate falls below ``give_up`` × the best so far: past a cache or occupancy limit,
    larger passes do not get faster again, and each costs more to time than the last.
    """
    rates: dict[int, float] = {}
    best = None
    for size in sizes:
        rates[size] = rate(size)
        if best is None or rates[size] > rates[best]:
            best = size
        elif rates[size] < give_up * rates[best]:
            break
    if best is None:
        raise ValueError("fastest_size needs at least one size")
    return best, rates


def measure_memory(probe: Callable[[int], int], device, copies: tuple[int, int] = (1, 4)) -> MemoryEstimate:
    """Peak memory of ``probe(k)`` (a forward pass over k copies of one system; returns its atom count) at two sizes.

    CUDA: the caching allocator's peak above what was allocated before; CPU: the peak resident set size, sampled
    while the probe runs. Both are taken above the level before the first probe.
    """
    import torch

    device = torch.device(device)
    points = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
    else:
        import psutil

        base = psutil.Process().memory_info().rss
    for k in copies:  # the larger probe runs second, so that memory the first one freed is reused, not counted twice
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            atoms = probe(k)
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
        else:
            atoms, peak = _peak_rss(lambda copies=k: probe(copies))
        points.append((atoms, max(peak - base, 0)))
    (a1, m1), (a2, m2) = points
    # The slope between the probes is the per-atom cost; it is never taken below half the larger probe's average,
    # so that a noisy slope errs towards smaller batches.
    per_atom = max((m2 - m1) / max(a2 - a1, 1), 0.5 * m2 / max(a2, 1), 1.0)
    fixed = max(m2 - per_atom * a2, 0.0)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # cached by us, reusable
    else:
        import psutil

        free = psutil.virtual_memory().available
    return MemoryEstimate(per_atom=float(per_atom), fixed=float(fixed), free=float(free))


def _peak_rss(run: Callable[[], int]) -> tuple[int, int]:
    """``run()``'s result and the largest resident set size seen while it ran (sampled every millisecond)."""
    import psutil

    process = psutil.Process()
    peak = [process.memory_info().rss]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        atoms = run()
    finally:
        done.set()
        sampler.join()
    return atoms, max(peak[0], process.memory_info().rss)


@dataclass(frozen=True)
class Calibration:
    """What ``calibrate`` measured: the atoms per pass to use, the memory cap, speeds by size, seconds spent."""

    max_atoms: int
    memory_max_atoms: int
    atoms_per_s: dict[int, float]
    seconds: float


# model → {(key, sizes, memory fraction): calibration}: measured once per process, not once per shard
_CALIBRATIONS: "weakref.WeakKeyDictionary[object, dict[tuple, Calibration]]" = weakref.WeakKeyDictionary()


def calibrate(
    systems: Sequence[Atoms],
    model: object,
    forward_pass: Callable[[Atoms, int], Callable[[], object]],
    device,
    memory_fraction: float,
    key: Hashable = (),
) -> Calibration:
    """``max_atoms="auto"``: the fastest atoms per pass within the memory cap (see the module docstring).

    ``forward_pass(atoms, copies)`` prepares one batch of ``copies`` copies of ``atoms`` and returns a function
    that runs ``model`` over it once. Probes are copies of the largest system (memory) and of the median-sized one
    (speed), so the result depends on the systems' sizes only, and is reused for later calls with the same
    ``model``, ``key`` (e.g. device and dtype) and sizes.
    """
    import torch

    device = torch.device(device)
    largest = max(systems, key=len)
    typical = sorted(systems, key=len)[len(systems) // 2]
    total = sum(len(atoms) for atoms in systems)
    cache_key = (key, len(largest), len(typical), total, memory_fraction)
    known = _CALIBRATIONS.setdefault(model, {})
    if cache_key in known:
        return known[cache_key]
    started = time.perf_counter()

    def fastest_pass(atoms: Atoms, copies: int, passes: int) -> float:
        """Seconds of the fastest of ``passes`` forward passes over one batch of ``copies`` copies of ``atoms``."""
        run = forward_pass(atoms, copies)
        fastest = float("inf")
        for _ in range(passes):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            begun = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            fastest = min(fastest, time.perf_counter() - begun)
        return fastest

    def memory_probe(copies: int) -> int:
        fastest_pass(largest, copies, passes=1)
        return copies * len(largest)

    memory_cap = max(measure_memory(memory_probe, device).max_atoms(memory_fraction), len(largest))
    n = len(typical)
    sizes = [n * 2**j for j in range(32) if n * 2**j <= min(memory_cap, total)] or [n]

    def atoms_per_s(size: int) -> float:
        return size / fastest_pass(typical, size // n, passes=2)  # the faster of two: the first may warm up

    best, rates = fastest_size(atoms_per_s, sizes)
    calibration = Calibration(
        max_atoms=max(best, len(largest)), memory_max_atoms=memory_cap,
        atoms_per_s={size: round(rate, 1) for size, rate in rates.items()},
        seconds=round(time.perf_counter() - started, 3),
    )
    known[cache_key] = calibration
    return calibration
