"""KD losses: hand-computed tiny cases, weighting, masks, edge aggregation, combiner, validation, auto-λ."""

import math

import pytest
import torch

from augkd.errors import ConfigError
from augkd.kd import (
    KDLoss,
    LossBatch,
    ProjectionHeads,
    TeacherTargets,
    calibrate_lambdas,
    edge_to_node,
    edge_to_vector,
    feature_shapes,
    ocp_loss,
)
from augkd.kd.losses import Vanilla2Loss, feature_loss
from augkd.models.interface import Graph, ModelOutput
from augkd.reductions import weighted_mean


def two_systems():
    """System 0: atoms 0, 1 (atom 0 fixed); system 1: atom 2."""
    info = LossBatch(batch=torch.tensor([0, 0, 1]), num_systems=2, free=torch.tensor([False, True, True]))
    e_s = torch.tensor([1.0, 2.0], requires_grad=True)
    e_t = torch.tensor([1.5, 1.0])
    f_s = torch.tensor([[9.0, 9.0, 9.0], [3.0, 4.0, 0.0], [0.0, 0.0, 1.0]], requires_grad=True)
    f_t = torch.zeros(3, 3)
    return info, e_s, e_t, f_s, f_t


def test_ocp_loss_hand_computed_and_fixed_atoms_excluded():
    info, e_s, e_t, f_s, f_t = two_systems()
    total, parts = ocp_loss(e_s, f_s, e_t, f_t, info, alpha_energy=1.0, alpha_force=100.0)
    # energy MAE = (0.5 + 1.0)/2; force L2MAE over free atoms 1, 2 = (5 + 1)/2 (fixed atom 0's 9s ignored)
    assert parts == pytest.approx({"energy": 0.75, "forces": 3.0})
    assert total.item() == pytest.approx(0.75 + 300.0)
    total.backward()
    assert torch.all(f_s.grad[0] == 0)  # fixed atom gets no gradient


def test_ocp_loss_energy_scale_and_defaults():
    info, e_s, e_t, f_s, f_t = two_systems()
    total, parts = ocp_loss(e_s, f_s, e_t, f_t, info, energy_scale=0.5)
    assert parts["energy"] == pytest.approx(1.5)
    assert total.item() == pytest.approx(1.5 + 100 * 3.0)  # default α_E = 1, α_F = 100


def test_weights_all_ones_equal_unweighted_and_scale_linearly():
    info, e_s, e_t, f_s, f_t = two_systems()
    base, _ = ocp_loss(e_s, f_s, e_t, f_t, info)
    ones, _ = ocp_loss(e_s, f_s, e_t, f_t, info, sample_weight=torch.ones(2), atom_weight=torch.ones(3))
    assert ones.item() == pytest.approx(base.item())
    # sample 1 weighted 3×: its energy term (1.0/2) and its atom's force term (1/2) count 3×
    _, parts = ocp_loss(e_s, f_s, e_t, f_t, info, sample_weight=torch.tensor([1.0, 3.0]))
    assert parts["energy"] == pytest.approx((0.5 + 3 * 1.0) / 2)
    assert parts["forces"] == pytest.approx((5 + 3 * 1.0) / 2)
    # linearity in one weight: L(w) = L(0) + w·(L(1) − L(0))
    def lw(x):
        return ocp_loss(e_s, f_s, e_t, f_t, info, sample_weight=torch.tensor([1.0, x]))[0].item()
    assert lw(2.5) == pytest.approx(lw(0.0) + 2.5 * (lw(1.0) - lw(0.0)))
    # atom weights act on forces only
    _, pa = ocp_loss(e_s, f_s, e_t, f_t, info, atom_weight=torch.tensor([7.0, 2.0, 1.0]))
    assert pa == pytest.approx({"energy": 0.75, "forces": (2 * 5 + 1) / 2})


def test_weighted_mean_masks_and_empty_rows_keep_grad():
    x = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    assert weighted_mean(x, mask=torch.tensor([True, False, True])).item() == pytest.approx(2.5)
    empty = weighted_mean(x, mask=torch.zeros(3, dtype=torch.bool))
    assert empty.item() == 0.0 and empty.grad_fn is not None
    empty.backward()
    assert torch.all(x.grad == 0)


def make_output(n=3, c=4, vector=True, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    feats = {"node": torch.randn(n, c, generator=g, requires_grad=requires_grad)}
    if vector:
        feats["vector"] = torch.randn(n, 3, c, generator=g, requires_grad=requires_grad)
    return ModelOutput(
        energy=torch.randn(2, generator=g, requires_grad=requires_grad),
        forces=torch.randn(n, 3, generator=g, requires_grad=requires_grad),
        atom_energy=torch.randn(n, generator=g, requires_grad=requires_grad),
        features=feats,
    )


def test_vanilla2_mean_over_all_atoms_with_mask():
    info, *_ = two_systems()
    student = make_output()
    student.atom_energy = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    teacher = TeacherTargets(energy=None, forces=None, atom_energy=torch.tensor([0.0, 0.0, 1.0]))
    assert Vanilla2Loss()(student, teacher, info).item() == pytest.approx((1 + 2 + 2) / 3)  # fixed atom included
    teacher.mask = torch.tensor([True, True, False])
    assert Vanilla2Loss()(student, teacher, info).item() == pytest.approx(1.5)
    w = Vanilla2Loss()(student, teacher, info, sample_weight=torch.tensor([2.0, 1.0]))
    assert w.item() == pytest.approx((2 * 1 + 2 * 2) / 2)


def test_n2n_hand_computed_with_identity_head_and_mae_option():
    info, *_ = two_systems()
    student = make_output(c=2, vector=False)
    student.features["node"] = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]], requires_grad=True)
    teacher = TeacherTargets(energy=None, forces=None, features={"node": torch.zeros(3, 3)})
    kd = KDLoss([{"name": "n2n", "lambda": 10.0}])
    heads = ProjectionHeads({"node": (2,)}, {"node": (3,)}, kd)
    with torch.no_grad():  # head = [x0, x1, 0]
        heads["n2n"].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        heads["n2n"].bias.zero_()
    total, parts = kd(student, teacher, info, heads)
    # per atom mean of squares over 3 channels: 5/3, 0, 10/3 → mean 5/3
    assert parts["n2n"] == pytest.approx(5 / 3)
    assert total.item() == pytest.approx(50 / 3)
    total.backward()
    assert heads["n2n"].weight.grad is not None and student.features["node"].grad is not None
    kd_mae = KDLoss([{"name": "n2n", "lambda": 1.0, "loss": "mae"}])
    _, parts = kd_mae(student, teacher, info, heads)
    assert parts["n2n"] == pytest.approx((3 / 3 + 0 + 4 / 3) / 3)
    # row mask: the cache lacks atom 2's features
    teacher.mask = torch.tensor([True, True, False])
    _, parts = kd(student, teacher, info, heads)
    assert parts["n2n"] == pytest.approx((5 / 3) / 2)
    teacher.mask = torch.zeros(3, dtype=torch.bool)
    total, parts = kd(student, teacher, info, heads)
    assert parts["n2n"] == 0.0 and total.grad_fn is not None


def random_graph(n=5, e=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (e,), generator=g)
    dst = (src + torch.randint(1, n, (e,), generator=g)) % n
    vec = torch.randn(e, 3, generator=g)
    return torch.stack([src, dst]), vec


def test_edge_aggregation_matches_loop():
    n = 5
    edge_index, vec = random_graph(n)
    edge = torch.randn(edge_index.shape[1], 4)
    unit = vec / vec.norm(dim=-1, keepdim=True)
    e2n = edge_to_node(edge, edge_index, n)
    ev = edge_to_vector(edge, edge_index, unit, n)
    for i in range(n):
        want_n = torch.zeros(4)
        want_v = torch.zeros(3, 4)
        for k in range(edge_index.shape[1]):
            if edge_index[1, k] == i:  # target/centre i
                want_n += edge[k]
                want_v += torch.outer(unit[k], edge[k])
        torch.testing.assert_close(e2n[i], want_n)
        torch.testing.assert_close(ev[i], want_v)


def test_teacher_targets_from_output_derives_edge_features_detached():
    n = 5
    edge_index, vec = random_graph(n)
    edge = torch.randn(edge_index.shape[1], 4, requires_grad=True)
    out = make_output(n=n)
    out.features["edge"] = edge
    out.graph = Graph(edge_index=edge_index, edge_vec=vec, edge_dist=vec.norm(dim=-1), cell_offsets=torch.zeros(12, 3))
    tt = TeacherTargets.from_output(out)
    assert not tt.energy.requires_grad and not tt.features["edge2node"].requires_grad
    torch.testing.assert_close(tt.features["edge2node"], edge_to_node(edge.detach(), edge_index, n))
    want = edge_to_vector(edge.detach(), edge_index, out.graph.unit_vec, n)
    torch.testing.assert_close(tt.features["edge_vector"], want)
    # the teacher's own 'vector' wins over the derived edge_vector for v2v; e2n uses edge2node
    assert tt.target_for("v2v") is tt.features["vector"]
    assert tt.target_for("e2n") is tt.features["edge2node"]
    # cached raw edge features + graph are derived on the fly
    cached = TeacherTargets(energy=None, forces=torch.zeros(n, 3), features={"edge": edge.detach()},
                            edge_index=edge_index, edge_unit_vec=out.graph.unit_vec)
    torch.testing.assert_close(cached.target_for("v2v"), tt.features["edge_vector"])
    assert TeacherTargets.from_output(out, detach=False).features["edge2node"].requires_grad
    no_graph = TeacherTargets(energy=None, forces=None, features={"edge": edge.detach()})
    with pytest.raises(ConfigError, match="edge_index is missing"):
        no_graph.target_for("e2n")


def test_same_code_for_online_and_cached_teacher():
    info, *_ = two_systems()
    student, teacher_out = make_output(seed=1), make_output(seed=2, requires_grad=False)
    online = TeacherTargets.from_output(teacher_out)
    cached = TeacherTargets(  # as read back from a float16 cache
        energy=teacher_out.energy.double(), forces=teacher_out.forces.half(),
        atom_energy=teacher_out.atom_energy.half(),
        features={k: v.half() for k, v in teacher_out.features.items()},
    )
    terms = [{"name": n, "lambda": 1.0} for n in ("vanilla1", "vanilla2", "n2n", "v2v")]
    kd = KDLoss(terms)
    assert feature_shapes(teacher_out) == {"node": (4,), "vector": (3, 4), "atom_energy": ()}
    kd.check(feature_shapes(student), feature_shapes(teacher_out))
    torch.manual_seed(0)
    heads = ProjectionHeads(feature_shapes(student.features), feature_shapes(teacher_out.features), kd)
    _, p_online = kd(student, online, info, heads)
    t_cached, p_cached = kd(student, cached, info, heads)
    assert t_cached.dtype == torch.float32
    for name in p_online:
        assert p_cached[name] == pytest.approx(p_online[name], rel=1e-2, abs=1e-2)


def test_v2v_uses_channel_linear_and_is_equivariant():
    info, *_ = two_systems()
    student = make_output(c=4)
    teacher_vec = torch.randn(3, 3, 6)
    teacher = TeacherTargets(energy=None, forces=None, features={"vector": teacher_vec})
    kd = KDLoss([{"name": "v2v", "lambda": 1.0}])
    heads = ProjectionHeads({"node": (4,), "vector": (3, 4)}, {"vector": (3, 6)}, kd)
    assert heads["v2v"].bias is None
    v = student.features["vector"]
    rot, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(3)))
    rotated = torch.einsum("ab,nbc->nac", rot, v)
    torch.testing.assert_close(heads["v2v"](rotated), torch.einsum("ab,nbc->nac", rot, heads["v2v"](v)))
    # loss invariant when both sides rotate
    loss = kd(student, teacher, info, heads)[1]["v2v"]
    student.features["vector"] = rotated
    teacher.features["vector"] = torch.einsum("ab,nbc->nac", rot, teacher_vec)
    assert kd(student, teacher, info, heads)[1]["v2v"] == pytest.approx(loss, rel=1e-5)
    with torch.no_grad():
        want = (heads["v2v"](v) - teacher_vec).square().mean()
    assert loss == pytest.approx(float(want), rel=1e-6)


def test_e2n_with_own_head():
    info, *_ = two_systems()
    student = make_output(c=4)
    features = {"node": torch.randn(3, 5), "edge2node": torch.randn(3, 7)}
    teacher = TeacherTargets(energy=None, forces=None, features=features)
    kd = KDLoss([{"name": "n2n", "lambda": 1.0}, {"name": "e2n", "lambda": 2.0}])
    heads = ProjectionHeads(feature_shapes(student.features), feature_shapes(teacher.features), kd)
    assert heads["n2n"].out_features == 5 and heads["e2n"].out_features == 7
    total, parts = kd(student, teacher, info, heads)
    with torch.no_grad():
        want = (heads["e2n"](student.features["node"]) - teacher.features["edge2node"]).square().mean()
    assert parts["e2n"] == pytest.approx(float(want), rel=1e-6)
    assert total.item() == pytest.approx(parts["n2n"] + 2 * parts["e2n"], rel=1e-6)


def test_vanilla1_alpha_from_config_defaults_to_training_alpha():
    info, e_s, e_t, f_s, f_t = two_systems()
    student = ModelOutput(energy=e_s, forces=f_s, atom_energy=torch.zeros(3))
    teacher = TeacherTargets(energy=e_t, forces=f_t)
    _, parts = KDLoss([{"name": "vanilla1", "lambda": 1}])(student, teacher, info)
    assert parts["vanilla1"] == pytest.approx(0.75 + 100 * 3.0)
    _, parts = KDLoss([{"name": "vanilla1", "lambda": 1, "alpha_energy": 0, "alpha_force": 30}])(student, teacher, info)
    assert parts["vanilla1"] == pytest.approx(90.0)
    # system 1 (atom 2) has no cached teacher outputs: only system 0's energy and free atom 1's force count
    teacher.mask = torch.tensor([True, True, False])
    _, parts = KDLoss([{"name": "vanilla1", "lambda": 1}])(student, teacher, info)
    assert parts["vanilla1"] == pytest.approx(0.5 + 100 * 5.0)
    teacher.mask = torch.zeros(3, dtype=torch.bool)
    total, parts = KDLoss([{"name": "vanilla1", "lambda": 1}])(student, teacher, info)
    assert parts["vanilla1"] == 0.0 and total.grad_fn is not None


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown KD loss 'n2e'"):
        KDLoss([{"name": "n2e", "lambda": 1}])
    with pytest.raises(ConfigError, match="twice"):
        KDLoss([{"name": "n2n"}, {"name": "n2n"}])
    with pytest.raises(ConfigError, match="lambda"):
        KDLoss([{"name": "n2n", "lambda": -1}])
    with pytest.raises(ConfigError, match="unknown option"):
        KDLoss([{"name": "n2n", "lamda": 1}])


def test_check_names_the_missing_feature():
    kd = KDLoss([{"name": "v2v", "lambda": 1}])
    with pytest.raises(ConfigError, match="v2v needs the student's 'vector' features; schnet has none"):
        kd.check({"node": (8,)}, {"node": (8,), "vector": (3, 8)}, "schnet", "painn")
    kd = KDLoss([{"name": "e2n", "lambda": 1}])
    msg = r"e2n needs teacher 'edge' or 'edge2node' features; chgnet-0.3.0 provides \['node'\]"
    with pytest.raises(ConfigError, match=msg):
        kd.check({"node": (8,)}, {"node": (64,)}, "painn", "chgnet-0.3.0")
    kd.check({"node": (8,)}, {"edge": (16,)})  # raw edge features suffice
    with pytest.raises(ConfigError, match="vanilla2 needs teacher per-atom energies"):
        KDLoss([{"name": "vanilla2"}]).check({}, {"node": (8,)})
    with pytest.raises(ConfigError, match=r"expected \(3, C\)"):
        KDLoss([{"name": "v2v"}]).check({"vector": (8,)}, {"vector": (3, 8)})
    assert KDLoss([{"name": "n2n"}, {"name": "e2n"}, {"name": "vanilla1"}, {"name": "vanilla2"}]
                  ).required_teacher_features() == ["node", "edge2node", "atom_energy"]


def test_auto_lambda_starts_at_fraction():
    fractions = {"n2n": 0.5, "vanilla1": 0.1}
    lambdas = calibrate_lambdas({"n2n": 0.02, "vanilla1": 400.0}, base_loss=80.0, target_fraction=fractions)
    assert lambdas["n2n"] * 0.02 == pytest.approx(0.5 * 80)
    assert lambdas["vanilla1"] * 400.0 == pytest.approx(0.1 * 80)
    with pytest.raises(ConfigError, match="n2n"):
        calibrate_lambdas({"n2n": 0.0}, 1.0, 0.5)

    info, *_ = two_systems()
    student = make_output(c=4)
    teacher = TeacherTargets(energy=None, forces=None, features={"node": 10 * torch.randn(3, 4)})
    kd = KDLoss([{"name": "n2n", "lambda": "auto", "fraction": 0.25}])
    heads = ProjectionHeads(feature_shapes(student.features), feature_shapes(teacher.features), kd)
    with pytest.raises(ConfigError, match="calibrate"):
        kd(student, teacher, info, heads)
    assert kd.needs_calibration
    l0 = 12.0
    kd.calibrate(kd.parts(student, teacher, info, heads), torch.tensor(l0, requires_grad=True))
    total, _ = kd(student, teacher, info, heads)
    assert total.item() == pytest.approx(0.25 * l0, rel=1e-6)
    restored = KDLoss([{"name": "n2n", "lambda": "auto"}])
    restored.load_state_dict(kd.state_dict())
    assert not restored.needs_calibration and restored.lambdas == kd.lambdas


def test_feature_shape_mismatch_is_one_line_error():
    with pytest.raises(ConfigError, match="mismatch"):
        feature_loss(torch.zeros(3, 4), torch.zeros(3, 5))


def test_loss_batch_from_atomic_data():
    class Data:
        batch = torch.tensor([0, 0, 1])
        natoms = torch.tensor([2, 1])
        fixed = torch.tensor([1, 0, 0])

    info = LossBatch.from_data(Data())
    assert info.num_systems == 2 and info.free.tolist() == [False, True, True]
    assert math.isclose(float(weighted_mean(torch.ones(3), mask=info.free)), 1.0)


def test_e2e_compares_the_edges_both_graphs_share_whatever_their_order():
    info = LossBatch(batch=torch.tensor([0, 0, 0]), num_systems=1)
    zero = torch.zeros(3)

    def graph(index, offsets):
        e = len(index[0])
        return Graph(edge_index=torch.tensor(index), edge_vec=torch.ones(e, 3), edge_dist=torch.ones(e),
                     cell_offsets=torch.tensor(offsets, dtype=torch.float32))

    # student edges: 1→0, 2→0, 0→1 (image +x), 2→1; teacher: 2→1, 1→0, 0→1 (home cell), 0→2 — shared: 2→1, 1→0
    student_graph = graph([[1, 2, 0, 2], [0, 0, 1, 1]], [[0, 0, 0]] * 2 + [[1, 0, 0], [0, 0, 0]])
    teacher_graph = graph([[2, 1, 0, 0], [1, 0, 1, 2]], [[0, 0, 0]] * 4)
    student_edges = torch.tensor([[1.0, 2.0], [5.0, 5.0], [7.0, 7.0], [3.0, 0.0]], requires_grad=True)
    teacher_edges = torch.tensor([[3.0, 1.0], [0.0, 2.0], [9.0, 9.0], [9.0, 9.0]])
    student = ModelOutput(energy=torch.zeros(1), forces=torch.zeros(3, 3), atom_energy=zero,
                          features={"node": torch.zeros(3, 2), "edge": student_edges}, graph=student_graph)
    teacher = TeacherTargets.from_output(
        ModelOutput(energy=torch.zeros(1), forces=torch.zeros(3, 3), atom_energy=zero,
                    features={"edge": teacher_edges}, graph=teacher_graph)
    )
    kd = KDLoss([{"name": "e2e", "lambda": 2.0}])
    kd.check({"node": (2,), "edge": (2,)}, feature_shapes(teacher))
    heads = ProjectionHeads({"edge": (2,)}, feature_shapes(teacher), kd)
    with torch.no_grad():
        heads["e2e"].weight.copy_(torch.eye(2))
        heads["e2e"].bias.zero_()
    total, parts = kd(student, teacher, info, heads)
    # 1→0: (1,2) vs (0,2) → 1; 2→1: (3,0) vs (3,1) → 1; mean over 2 edges × 2 channels
    assert parts["e2e"] == pytest.approx(0.5) and total.item() == pytest.approx(1.0)
    total.backward()
    assert torch.all(student_edges.grad[[1, 2]] == 0) and student_edges.grad[[0, 3]].abs().sum() > 0
    cached = TeacherTargets(energy=None, forces=None, features={"node": torch.zeros(3, 2)})
    with pytest.raises(ConfigError, match="e2e needs teacher per-edge 'edge' features"):
        kd(student, cached, info, heads)
