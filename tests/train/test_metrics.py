"""OC20 S2EF metrics: hand-computed cases, fixed atoms, EFwT boundaries, micro-averaging, gap closed, table."""

import math

import pytest
import torch

from augkd.train.metrics import (
    MetricAccumulator,
    compare_table,
    efwt,
    energy_mae,
    force_cos,
    force_mae,
    gap_closed,
)


def test_energy_and_force_mae_hand_computed_fixed_excluded():
    assert energy_mae(torch.tensor([1.0, 2.0]), torch.tensor([1.1, 1.5])) == pytest.approx(300.0)  # meV
    fp = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [5.0, 5.0, 5.0]])
    ft = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    free = torch.tensor([True, True, False])
    # |err| over free atoms × xyz: 1,0,0, 0,1,1 → 3/6 eV/Å
    assert force_mae(fp, ft, free) == pytest.approx(500.0)
    assert force_mae(fp, ft) == pytest.approx((3 + 15) / 9 * 1000)


def test_force_cos():
    fp = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [9.0, 0.0, 0.0]])
    ft = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -3.0], [0.0, 9.0, 0.0]])
    free = torch.tensor([True, True, True, False])
    assert force_cos(fp, ft, free) == pytest.approx((1 + 1 / math.sqrt(2) - 1) / 3)


def test_efwt_thresholds_strict_and_fixed_atoms_ignored():
    batch = torch.tensor([0, 0, 1, 2, 3])
    free = torch.tensor([True, False, True, True, True])
    e_true = torch.zeros(4, dtype=torch.float64)
    f_true = torch.zeros(5, 3, dtype=torch.float64)
    e_pred = torch.tensor([0.019, 0.02, 0.0, 0.0], dtype=torch.float64)
    f_pred = torch.zeros(5, 3, dtype=torch.float64)
    f_pred[0, 2] = -0.029  # system 0 free atom within
    f_pred[1] = 1.0  # fixed atom of system 0: ignored
    f_pred[3, 1] = 0.03  # system 2 exactly at the force threshold: fails (strict <)
    f_pred[4, 0] = 0.0299  # system 3 passes
    # system 1: |ΔE| = 0.02 exactly fails
    assert efwt(e_pred, e_true, f_pred, f_true, batch, free) == pytest.approx(50.0)
    assert efwt(e_pred, e_true, f_pred, f_true, batch) == pytest.approx(25.0)  # without the mask sys 0 fails


def test_accumulator_micro_averages_across_batches():
    g = torch.Generator().manual_seed(0)
    acc = MetricAccumulator()
    all_e, all_et, all_f, all_ft, all_b, all_free = [], [], [], [], [], []
    offset = 0
    for natoms in ([2, 5], [7], [1, 1, 3]):
        n, b = sum(natoms), len(natoms)
        batch = torch.repeat_interleave(torch.arange(b), torch.tensor(natoms))
        e, et = torch.randn(b, generator=g), torch.randn(b, generator=g)
        f, ft = 0.02 * torch.randn(n, 3, generator=g), 0.02 * torch.randn(n, 3, generator=g)
        free = torch.rand(n, generator=g) > 0.3
        e = et + 0.015 * torch.sign(torch.randn(b, generator=g))  # |ΔE| = 0.015 for EFwT to be non-trivial
        acc.update(e, et, f, ft, batch, free)
        all_e.append(e); all_et.append(et); all_f.append(f); all_ft.append(ft)
        all_b.append(batch + offset); all_free.append(free)
        offset += b
    m = acc.compute()
    e, et, f, ft = map(torch.cat, (all_e, all_et, all_f, all_ft))
    batch, free = torch.cat(all_b), torch.cat(all_free)
    assert m["n_systems"] == 6 and m["n_free_atoms"] == int(free.sum())
    assert m["energy_mae"] == pytest.approx(energy_mae(e, et), rel=1e-6)
    assert m["force_mae"] == pytest.approx(force_mae(f, ft, free), rel=1e-6)
    assert m["force_cos"] == pytest.approx(force_cos(f, ft, free), rel=1e-6)
    assert m["efwt"] == pytest.approx(efwt(e, et, f, ft, batch, free))
    # merging two accumulators = one accumulator over both
    other = MetricAccumulator()
    other.merge(acc)
    assert other.compute() == pytest.approx(m, nan_ok=True)


def test_accumulator_force_cos_micro_average():
    acc = MetricAccumulator()
    # batch 1: one free atom, cos 1; batch 2: three free atoms, cos -1 → micro mean -0.5 (batch-mean average: 0)
    acc.update(torch.zeros(1), torch.zeros(1), torch.ones(1, 3), torch.ones(1, 3), torch.zeros(1, dtype=torch.long))
    acc.update(torch.zeros(1), torch.zeros(1), torch.ones(3, 3), -torch.ones(3, 3), torch.zeros(3, dtype=torch.long))
    assert acc.compute()["force_cos"] == pytest.approx(-0.5)


def test_gap_closed():
    # paper Table 3: PaiNN-big → PaiNN-small n2n energy 489 → 457, teacher 440 → 65.3 % (paper 64.8 on unrounded)
    assert gap_closed(489, 457, 440) == pytest.approx(32 / 49 * 100)
    assert gap_closed(0.5, 0.7, 0.9, higher_is_better=True) == pytest.approx(50.0)
    assert gap_closed(10, 12, 8) == pytest.approx(-100.0)  # KD made it worse
    assert math.isnan(gap_closed(1.0, 1.0, 1.0))


def test_compare_table():
    rows = {
        "PaiNN-small": {"energy_mae": 489.0, "force_mae": 47.1, "force_cos": 0.5, "efwt": 1.0},
        "PaiNN-big": {"energy_mae": 440.0, "force_mae": 45.3, "force_cos": 0.6, "efwt": 2.0},
        "n2n": {"energy_mae": 457.0, "force_mae": 46.7, "force_cos": 0.55, "efwt": 1.5},
    }
    text = compare_table(rows, student="PaiNN-small", teacher="PaiNN-big")
    lines = text.splitlines()
    assert "E MAE meV" in lines[0] and "gap E %" in lines[0] and "gap F %" in lines[0]
    n2n = next(line for line in lines if line.startswith("n2n"))
    assert "65.3" in n2n and "22.2" in n2n and "50.0" in n2n
    assert len(lines) == 5
