"""Interleaved, repeated measurements for benchmarks that compare variants (A B A B ...).

A single pass of each variant lets one disturbance (another job on a shared machine, a first-call allocation, a
cold cache) decide a ratio. ``interleave`` runs one untimed warm-up pass of every variant, then ``repeats`` rounds
of one pass of each in a fixed order (A B C A B C ...), so that slow phases of the machine hit every variant alike,
and reports per variant the values, their median and min (and max), and ratios of medians between named pairs.

    from interleave import interleave, timed
    result = interleave({"a": lambda: timed(run_a), "b": lambda: timed(run_b)}, repeats=5,
                        ratios={"b_over_a": ("b", "a")})
    result.median["a"], result.ratios["b_over_a"]

Each callable runs ONE pass of one variant and returns what it measured (seconds, a rate, ...); the helper does no
timing itself, so it is tested with fake callables (tests/test_bench_interleave.py).
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

DEFAULT_REPEATS = 5


@dataclass
class Interleaved:
    """What ``interleave`` measured: ``values[name]`` in the order run, their median/min/max, ratios of medians."""

    repeats: int
    values: dict[str, list[float]]
    median: dict[str, float] = field(default_factory=dict)
    min: dict[str, float] = field(default_factory=dict)
    max: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    #: per ratio, the ratio of the values of the same round (its spread says how noisy the ratio is)
    round_ratios: dict[str, list[float]] = field(default_factory=dict)

    def summary(self, name: str, digits: int = 4, scale: float = 1.0) -> dict:
        """``{"median", "min", "max", "values"}`` of one variant, each multiplied by ``scale`` and rounded."""
        return {
            "median": round(self.median[name] * scale, digits),
            "min": round(self.min[name] * scale, digits),
            "max": round(self.max[name] * scale, digits),
            "values": [round(v * scale, digits) for v in self.values[name]],
        }


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("inf") if a else float("nan")


def interleave(
    variants: Mapping[str, Callable[[], float]],
    repeats: int = DEFAULT_REPEATS,
    ratios: Mapping[str, tuple[str, str]] | None = None,
    warmup: bool = True,
    between: Callable[[], None] | None = None,
) -> Interleaved:
    """Run ``variants`` (name -> one pass, returning its measurement) interleaved ``repeats`` times.

    With ``warmup`` each variant first runs once untimed (its result dropped), in the same order. ``between`` (e.g.
    ``gc.collect``) is called before every pass, warm-up included. ``ratios`` maps a key to ``(numerator,
    denominator)`` variant names; ``result.ratios[key]`` is the ratio of their medians.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, not {repeats}")
    names = list(variants)
    if not names:
        raise ValueError("no variants to run")
    ratios = dict(ratios or {})
    for key, pair in ratios.items():
        unknown = [n for n in pair if n not in variants]
        if len(pair) != 2 or unknown:
            raise ValueError(f"ratio {key!r}: {pair!r} is not a pair of variant names ({', '.join(names)})")
    if warmup:
        for name in names:
            if between is not None:
                between()
            variants[name]()
    values: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            if between is not None:
                between()
            values[name].append(float(variants[name]()))
    result = Interleaved(repeats=repeats, values=values)
    for name in names:
        result.median[name] = statistics.median(values[name])
        result.min[name] = min(values[name])
        result.max[name] = max(values[name])
    for key, (top, bottom) in ratios.items():
        result.ratios[key] = _ratio(result.median[top], result.median[bottom])
        result.round_ratios[key] = [_ratio(a, b) for a, b in zip(values[top], values[bottom])]
    return result


def timed(call: Callable[[], object]) -> float:
    """Wall-clock seconds of ``call()``, after a garbage collection (so that no earlier pass's garbage is paid)."""
    gc.collect()
    start = time.perf_counter()
    call()
    return time.perf_counter() - start
