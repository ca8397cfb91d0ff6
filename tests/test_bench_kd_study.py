"""bench/kd_study.py: λ terms per configuration, the features each loss needs, and the seed summary (no training)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "kd_study.py"
_spec = importlib.util.spec_from_file_location("bench_kd_study", _PATH)
kd_study = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = kd_study
_spec.loader.exec_module(kd_study)


def test_kd_terms_scale_auto_fraction_and_vanilla1_lambda():
    terms = kd_study.kd_terms(["n2n", "vanilla1"], 3.0, 0.3)
    assert terms[0] == {"name": "n2n", "lambda": "auto", "fraction": pytest.approx(0.9)}
    assert terms[1] == {"name": "vanilla1", "lambda": 3.0}


def test_teacher_feature_by_teacher_kind():
    painn = {"node": (64,), "vector": (3, 64)}
    gemnet = {"node": (32,), "edge": (32,), "edge2node": (32,), "edge_vector": (3, 32)}
    assert kd_study.teacher_feature("v2v", painn) == "vector"
    assert kd_study.teacher_feature("v2v", gemnet) == "edge_vector"
    assert kd_study.teacher_feature("e2n", painn) is None
    assert kd_study.teacher_feature("e2n", gemnet) == "edge2node"
    assert kd_study.teacher_feature("vanilla2", painn) == "atom_energy"
    assert kd_study.teacher_feature("vanilla1", painn) == ""


def scores(e, f):
    return {"energy_mae": e, "force_mae": f, "force_cos": 0.9, "efwt": 0.0}


def test_summary_gap_per_seed_and_best_of_both_gaps():
    teacher = scores(100.0, 10.0)
    results = {
        "student": {0: scores(200.0, 20.0), 1: scores(300.0, 30.0)},
        "n2n": {0: scores(120.0, 21.0), 1: scores(140.0, 31.0)},  # E gap 80 %, F gap −10 % / −5 %
        "n2n+vanilla1": {0: scores(150.0, 17.0), 1: scores(200.0, 24.0)},  # E 50 %, F 30 %
    }
    summary = kd_study.summarize(results, teacher)
    row = summary["table"]["n2n"]
    assert row["gap_energy_pct"]["per_seed"] == pytest.approx([80.0, 80.0])
    assert row["gap_force_pct"]["mean"] == pytest.approx(-7.5)
    assert row["energy_mae"]["mean"] == pytest.approx(130.0) and row["energy_mae"]["std"] == pytest.approx(200**0.5)  # sample std
    best = summary["best_both"]
    assert best["config"] == "n2n+vanilla1" and best["min_gap_pct"] == pytest.approx(30.0)
    assert best["reached"] is False  # 50 % of the energy gap < 60 %
    assert "gap_energy_pct" not in summary["table"]["student"]


def test_table_rows_print_and_markdown(capsys):
    teacher = scores(100.0, 10.0)
    results = {"student": {0: scores(200.0, 20.0), 1: scores(300.0, 30.0)},
               "n2n": {0: scores(120.0, 21.0), 1: scores(140.0, 31.0)}}
    rows = kd_study.table_rows(kd_study.summarize(results, teacher)["table"], teacher, {"n2n": "n2n 12.5"})
    assert rows[0][:3] == ["teacher", "100.0", "10.0"]
    assert rows[2] == ["n2n", "130.0 ± 14.1", "26.0 ± 7.1", "0.9000 ± 0.0000", "0.00 ± 0.00", "80.0 ± 0.0",
                       "-7.5 ± 3.5", "n2n 12.5"]
    kd_study.print_table(rows)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("run") and printed[-1].startswith("n2n") and "130.0 ± 14.1" in printed[-1]
    markdown = kd_study.markdown_table(rows).splitlines()
    assert markdown[0] == "| " + " | ".join(kd_study.COLUMNS) + " |" and len(markdown) == 2 + len(rows)
