"""Origin weights: the paper's two-origin formula, Σ α_b,k·w_k = 1 for every batch, and the losses they weigh."""

import itertools

import numpy as np
import pytest
import torch

from augkd.kd import KDLoss, LossBatch, TeacherTargets, ocp_loss
from augkd.mixers import MixtureSampler, batch_shares, origin_weights
from augkd.models.interface import ModelOutput


@pytest.mark.parametrize("r", [0.3, 1.0, 2.5])
def test_two_origins_match_the_paper_formula(r):
    for n_syn in range(0, 9):
        origins = ["synthetic"] * n_syn + ["dft"] * (8 - n_syn)
        w = origin_weights(origins, {"dft": 1.0, "synthetic": r})
        alpha_b = n_syn / 8
        w_dft = 1.0 / (1.0 - alpha_b + alpha_b * r)
        assert w[n_syn:].tolist() == pytest.approx([w_dft] * (8 - n_syn), rel=1e-12)
        assert w[:n_syn].tolist() == pytest.approx([r * w_dft] * n_syn, rel=1e-12)
        assert w_dft * (1 - alpha_b) + r * w_dft * alpha_b == pytest.approx(1.0, rel=1e-12)
        if n_syn in (0, 8):  # a batch of one origin weighs 1
            assert w.tolist() == [1.0] * 8


def test_weight_identity_holds_for_every_batch_of_a_mixed_epoch():
    """N = 3 origins with per-origin ratios: Σ_k α_b,k·w_k = 1 and w_k/w_dft = ρ_k in every batch drawn."""
    ratios = {"dft": 1.0, "synthetic": 0.3, "rattle": 4.0}
    origins_of = np.array(["dft"] * 20 + ["synthetic"] * 15 + ["rattle"] * 6)
    sampler = MixtureSampler([20, 15, 6], [0.5, 0.3, 0.2], batch_size=7, seed=1)
    batches = 0
    while sampler.epoch < 4:
        origins = origins_of[sampler.next_batch()].tolist()
        w = origin_weights(origins, ratios)
        shares = batch_shares(origins)
        by_origin = {o: float(w[origins.index(o)]) for o in shares}
        assert sum(shares[o] * by_origin[o] for o in shares) == pytest.approx(1.0, abs=1e-12)
        assert float(w.mean()) == pytest.approx(1.0, abs=1e-12)
        for a, b in itertools.combinations(shares, 2):
            assert by_origin[a] / by_origin[b] == pytest.approx(ratios[a] / ratios[b], rel=1e-12)
        batches += 1
    assert batches > 20


def tiny_batch():
    """3 systems: dft (2 atoms, one fixed), synthetic (1 atom), dft (2 atoms)."""
    info = LossBatch(batch=torch.tensor([0, 0, 1, 2, 2]), num_systems=3,
                     free=torch.tensor([True, False, True, True, True]))
    e_pred = torch.tensor([1.0, 2.0, -1.0])
    e_true = torch.tensor([0.0, 2.0, 1.0])
    f_pred = torch.tensor([[1.0, 0, 0], [9, 9, 9], [0, 3, 0], [0, 0, 2], [1, 1, 0]])
    f_true = torch.zeros(5, 3)
    return info, e_pred, e_true, f_pred, f_true


def test_weighted_loss_equals_the_hand_computed_one():
    info, e_pred, e_true, f_pred, f_true = tiny_batch()
    r = 0.3
    w = origin_weights(["dft", "synthetic", "dft"], {"synthetic": r})
    w_dft = 1 / (2 / 3 + r / 3)
    w_s = r * w_dft
    total, parts = ocp_loss(e_pred, f_pred, e_true, f_true, info, alpha_energy=1.0, alpha_force=100.0,
                            energy_scale=2.0, force_scale=0.5, sample_weight=w)
    # energy: Σ_b w_b·|ΔE_b|/scale over the 3 systems, divided by 3
    energy = (w_dft * 1.0 / 2 + w_s * 0.0 / 2 + w_dft * 2.0 / 2) / 3
    # forces: Σ over the 4 free atoms of w·|ΔF|/scale, divided by 4 (the fixed atom's 9s never count)
    forces = (w_dft * 1 / 0.5 + w_s * 3 / 0.5 + w_dft * 2 / 0.5 + w_dft * np.sqrt(2) / 0.5) / 4
    assert parts["energy"] == pytest.approx(energy, rel=1e-6)
    assert parts["forces"] == pytest.approx(forces, rel=1e-6)
    assert float(total) == pytest.approx(energy + 100 * forces, rel=1e-6)
    unweighted, _ = ocp_loss(e_pred, f_pred, e_true, f_true, info, energy_scale=2.0, force_scale=0.5)
    assert float(unweighted) != pytest.approx(float(total), rel=1e-3)


def test_weighted_kd_losses_equal_the_hand_computed_ones():
    """Feature and per-atom KD terms weigh each atom by its system's origin weight; masked rows drop out."""
    info, e_pred, _, f_pred, _ = tiny_batch()
    w = origin_weights(["dft", "synthetic", "dft"], {"synthetic": 0.3}).float()
    node = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0], [0.0, 0.0], [1.0, 1.0]])
    teacher_node = torch.zeros(5, 2)
    student = ModelOutput(energy=e_pred, forces=f_pred, atom_energy=torch.tensor([1.0, 0, 2, 0, 0]),
                          features={"node": node})
    # cached teacher outputs only for the synthetic system (atom 2): the KD terms cover that atom alone
    mask = torch.tensor([False, False, True, False, False])
    teacher = TeacherTargets(energy=torch.zeros(3), forces=torch.zeros(5, 3), atom_energy=torch.zeros(5),
                             features={"node": teacher_node}, mask=mask)
    kd = KDLoss([{"name": "n2n", "lambda": 1.0}, {"name": "vanilla2", "lambda": 1.0}])

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    heads = torch.nn.ModuleDict({"n2n": Identity()})
    _, parts = kd(student, teacher, info, heads, sample_weight=w)
    w_s = float(w[1])
    assert parts["n2n"] == pytest.approx(w_s * (9 + 1) / 2, rel=1e-6)  # MSE over 2 channels of atom 2, weighted
    assert parts["vanilla2"] == pytest.approx(w_s * 2.0, rel=1e-6)
    # all atoms covered: Σ over atoms of w·mean-square / 5
    teacher.mask = None
    _, parts = kd(student, teacher, info, heads, sample_weight=w)
    w_dft = float(w[0])
    expected = (w_dft * 0.5 + w_dft * 2.0 + w_s * 5.0 + w_dft * 0.0 + w_dft * 1.0) / 5
    assert parts["n2n"] == pytest.approx(expected, rel=1e-6)


def test_weighted_e2n_and_v2v_equal_the_hand_computed_ones():
    info, e_pred, _, f_pred, _ = tiny_batch()
    w = origin_weights(["dft", "synthetic", "dft"], {"synthetic": 2.0}).float()
    w_dft, w_s = float(w[0]), float(w[1])
    node = torch.arange(10.0).reshape(5, 2) / 10
    vector = torch.arange(30.0).reshape(5, 3, 2) / 30
    student = ModelOutput(energy=e_pred, forces=f_pred, atom_energy=torch.zeros(5),
                          features={"node": node, "vector": vector})
    teacher = TeacherTargets(energy=None, forces=None, features={"edge2node": torch.zeros(5, 2),
                                                                 "vector": torch.ones(5, 3, 2)})
    kd = KDLoss([{"name": "e2n", "lambda": 1.0}, {"name": "v2v", "lambda": 1.0, "loss": "mae"}])

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    heads = torch.nn.ModuleDict({"e2n": Identity(), "v2v": Identity()})
    _, parts = kd(student, teacher, info, heads, sample_weight=w)
    per_atom_w = [w_dft, w_dft, w_s, w_dft, w_dft]
    e2n = sum(wa * float(node[a].square().mean()) for a, wa in enumerate(per_atom_w)) / 5
    v2v = sum(wa * float((vector[a] - 1).abs().mean()) for a, wa in enumerate(per_atom_w)) / 5
    assert parts["e2n"] == pytest.approx(e2n, rel=1e-6)
    assert parts["v2v"] == pytest.approx(v2v, rel=1e-6)
