"""bench/interleave.py: call order (warm-ups, then A B A B ...), medians, mins and ratios, with fake callables."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "interleave.py"
_spec = importlib.util.spec_from_file_location("bench_interleave", _PATH)
interleave_module = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = interleave_module  # dataclasses look their module up while the class is built
_spec.loader.exec_module(interleave_module)
interleave = interleave_module.interleave


def fake(calls: list, name: str, results: list[float]):
    """A variant that records its name in ``calls`` and returns ``results`` one after another."""
    remaining = iter(results)

    def run() -> float:
        calls.append(name)
        return next(remaining)

    return run


def test_order_is_warmup_then_abab():
    calls = []
    interleave({"a": fake(calls, "a", [0, 1, 2, 3]), "b": fake(calls, "b", [0, 1, 2, 3])}, repeats=3)
    assert calls == ["a", "b"] + ["a", "b"] * 3


def test_order_without_warmup_and_three_variants():
    calls, between = [], []
    interleave(
        {n: fake(calls, n, [1.0] * 2) for n in ("x", "y", "z")},
        repeats=2, warmup=False, between=lambda: between.append(len(calls)),
    )
    assert calls == ["x", "y", "z", "x", "y", "z"]
    assert between == [0, 1, 2, 3, 4, 5]  # once before every pass


def test_default_repeats_is_five():
    calls = []
    result = interleave({"a": fake(calls, "a", [1.0] * 6)})
    assert result.repeats == 5 and len(result.values["a"]) == 5 and len(calls) == 6


def test_warmup_result_is_dropped_and_stats():
    calls = []
    result = interleave(
        {
            "base": fake(calls, "base", [100.0, 2.0, 1.0, 4.0, 3.0, 50.0]),  # warm-up 100 is not counted
            "kd": fake(calls, "kd", [100.0, 3.0, 2.0, 9.0, 4.0, 5.0]),
        },
        repeats=5,
        ratios={"kd_over_base": ("kd", "base"), "base_over_kd": ("base", "kd")},
    )
    assert result.values == {"base": [2.0, 1.0, 4.0, 3.0, 50.0], "kd": [3.0, 2.0, 9.0, 4.0, 5.0]}
    assert result.median == {"base": 3.0, "kd": 4.0}
    assert result.min == {"base": 1.0, "kd": 2.0}
    assert result.max == {"base": 50.0, "kd": 9.0}
    assert result.ratios["kd_over_base"] == pytest.approx(4.0 / 3.0)
    assert result.ratios["base_over_kd"] == pytest.approx(0.75)
    assert result.round_ratios["kd_over_base"] == pytest.approx([1.5, 2.0, 2.25, 4 / 3, 0.1])


def test_even_repeats_median_is_mean_of_middle_two():
    calls = []
    result = interleave({"a": fake(calls, "a", [0.0, 4.0, 1.0, 3.0, 2.0])}, repeats=4)
    assert result.median["a"] == pytest.approx(2.5)


def test_summary_rounds_and_scales():
    calls = []
    result = interleave({"a": fake(calls, "a", [0.0, 0.123456, 0.2, 0.3])}, repeats=3)
    assert result.summary("a", digits=2, scale=10) == {"median": 2.0, "min": 1.23, "max": 3.0,
                                                       "values": [1.23, 2.0, 3.0]}


def test_bad_arguments():
    with pytest.raises(ValueError):
        interleave({"a": lambda: 1.0}, repeats=0)
    with pytest.raises(ValueError):
        interleave({})
    with pytest.raises(ValueError, match="ratio 'r'"):
        interleave({"a": lambda: 1.0}, repeats=1, ratios={"r": ("a", "missing")})
