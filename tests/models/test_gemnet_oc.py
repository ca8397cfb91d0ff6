"""GemNet-OC (tiny preset, float64 unless said): symmetries, periodic images, bases, interaction graphs, features,
fitted scale factors, training, checkpoints, and its use as a ``ckpt:`` teacher and as a KD student."""

import csv
import itertools

import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT
from conftest import cu_adslab, run_job
from model_helpers import random_rotation, rattled_ethanol

from augkd.distributed.jobs import LabelJob
from augkd.errors import AugkdError, ConfigError
from augkd.generators.label import LabelConfig
from augkd.io.dataset import DatasetWriter
from augkd.kd.targets import TeacherTargets, edge_to_node, edge_to_vector
from augkd.models import build_model, load_model, save_model
from augkd.models.data import atoms_to_batch
from augkd.models.gemnet_oc import fit_scale_factors
from augkd.models.gemnet_oc.basis import (
    PolynomialEnvelope,
    RadialBasis,
    circular_basis,
    dihedral_cosine,
    spherical_basis,
)
from augkd.models.gemnet_oc.layers import ScaleFactor
from augkd.models.interface import build_graph
from augkd.records import LabelledFrame

TOL = {"rtol": 1e-8, "atol": 1e-9}


def slab(seed=0):
    return cu_adslab(np.random.default_rng(seed))


def fitting_batch(dtype=torch.float64):
    return atoms_to_batch([rattled_ethanol(), slab(10)], dtype=dtype)


def gemnet(seed=0, dtype=torch.float64, fit=True, **overrides):
    torch.manual_seed(seed)
    model = build_model("gemnet-oc-tiny", **overrides).to(dtype).eval()
    model.fit_energy_normalizer(-3.2, 1.7, 0.8)  # a non-trivial normaliser, part of every property test
    if fit:
        assert fit_scale_factors(model, fitting_batch(dtype)) == []
    return model


@pytest.fixture(scope="module")
def model():
    return gemnet()


def run(model, atoms_list):
    return model(atoms_to_batch(atoms_list, dtype=next(model.parameters()).dtype))


def numpy_outputs(out):
    values = {"energy": out.energy, "forces": out.forces, "atom_energy": out.atom_energy, **out.features}
    return {name: value.detach().numpy() for name, value in values.items()}


def matched_edges(graph_a, graph_b, rotation=None, atom_map=None):
    """Rows of the same edges in two graphs, identified by their atoms and edge vector (cell offsets may differ:
    positions can wrap into the cell); graph_a's vectors rotated by ``rotation`` and its atoms renamed by
    ``atom_map`` first."""

    def keys(graph, rotation, atom_map):
        vec = graph.edge_vec.detach().numpy()
        vec = vec if rotation is None else vec @ rotation.T
        index = graph.edge_index.numpy() if atom_map is None else atom_map[graph.edge_index.numpy()]
        return {(int(s), int(t), *np.round(v, 5)): row for row, (s, t, v) in enumerate(zip(*index, vec))}

    a, b = keys(graph_a, rotation, atom_map), keys(graph_b, None, None)
    assert a.keys() == b.keys()  # the same edge set
    common = sorted(a)
    return [a[k] for k in common], [b[k] for k in common]


# ---------------------------------------------------------------------------------------------------------------
# Symmetries and periodic images
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("system", ["molecule", "slab"])
def test_rotation_and_translation(model, system):
    atoms = rattled_ethanol() if system == "molecule" else slab()
    rotation = random_rotation(1)
    moved = atoms.copy()
    moved.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    moved.positions = atoms.positions @ rotation.T + np.array([0.7, -1.3, 2.1])
    out_ref, out_new = run(model, [atoms]), run(model, [moved])
    ref, new = numpy_outputs(out_ref), numpy_outputs(out_new)
    for key in ("energy", "atom_energy", "node", "edge2node", "x0", "h2"):
        np.testing.assert_allclose(new[key], ref[key], **TOL, err_msg=key)
    np.testing.assert_allclose(new["forces"], ref["forces"] @ rotation.T, **TOL)
    np.testing.assert_allclose(new["edge_vector"], np.einsum("ij,njc->nic", rotation, ref["edge_vector"]), **TOL)
    rows_ref, rows_new = matched_edges(out_ref.graph, out_new.graph, rotation=rotation)
    for key in ("edge", "m2"):
        np.testing.assert_allclose(new[key][rows_new], ref[key][rows_ref], **TOL, err_msg=key)
    # a zero field would pass any equivariance test
    assert np.abs(ref["forces"]).max() > 1e-4 and np.abs(ref["edge_vector"]).max() > 1e-4


def test_permutation_with_binding_neighbour_limits(model):
    atoms = slab(3)
    limits = model.settings
    degree = torch.bincount(build_graph(atoms_to_batch([atoms], torch.float64), limits.cutoff, 1000).edge_index[1])
    assert int(degree.min()) > limits.max_neighbors  # every centre loses neighbours to the limit: a real test
    perm = np.random.default_rng(2).permutation(len(atoms))
    out_ref, out_new = run(model, [atoms]), run(model, [atoms[perm]])
    ref, new = numpy_outputs(out_ref), numpy_outputs(out_new)
    np.testing.assert_allclose(new["energy"], ref["energy"], **TOL)
    for key in ("forces", "atom_energy", "node", "edge2node", "edge_vector", "h1", "x2"):
        np.testing.assert_allclose(new[key], ref[key][perm], **TOL, err_msg=key)
    rows_ref, rows_new = matched_edges(out_ref.graph, out_new.graph, atom_map=np.argsort(perm))
    np.testing.assert_allclose(new["edge"][rows_new], ref["edge"][rows_ref], **TOL)


def test_supercell_has_twice_the_energy_and_the_same_atoms(model):
    # in-plane cell (5.1 Å) shorter than the atom-interaction cutoff (6 Å): several images of one atom are neighbours
    primitive = slab(4)
    supercell = primitive.repeat((2, 1, 1))
    ref, new = numpy_outputs(run(model, [primitive])), numpy_outputs(run(model, [supercell]))
    np.testing.assert_allclose(new["energy"], 2 * ref["energy"], **TOL)
    for key in ("forces", "atom_energy", "node", "edge2node", "edge_vector"):
        np.testing.assert_allclose(new[key], np.concatenate([ref[key], ref[key]]), **TOL, err_msg=key)


def test_batch_equals_each_system_alone(model):
    together = numpy_outputs(run(model, [rattled_ethanol(), slab(5)]))
    alone = [numpy_outputs(run(model, [a])) for a in (rattled_ethanol(), slab(5))]
    np.testing.assert_allclose(together["energy"], [a["energy"][0] for a in alone], **TOL)
    for key in ("forces", "atom_energy", "node", "edge_vector"):
        np.testing.assert_allclose(together[key], np.concatenate([a[key] for a in alone]), **TOL, err_msg=key)


def test_gradient_force_variant_matches_finite_differences_and_rotates():
    model = gemnet(direct_forces=False)
    atoms = rattled_ethanol()[:6]
    out = numpy_outputs(run(model, [atoms]))
    assert "edge" not in out  # no force head, no edge outputs
    step = 1e-5
    components = np.random.default_rng(6).choice(out["forces"].size, size=5, replace=False)
    for i, k in zip(*np.unravel_index(components, out["forces"].shape)):
        energies = []
        for sign in (1, -1):
            shifted = atoms.copy()
            shifted.positions[i, k] += sign * step
            energies.append(numpy_outputs(run(model, [shifted]))["energy"][0])
        assert out["forces"][i, k] == pytest.approx(-(energies[0] - energies[1]) / (2 * step), rel=1e-5, abs=1e-7)


# ---------------------------------------------------------------------------------------------------------------
# Bases
# ---------------------------------------------------------------------------------------------------------------
def test_bases_pass_gradcheck_and_have_their_defining_values():
    torch.manual_seed(0)
    double = {"dtype": torch.float64, "requires_grad": True}
    radial = RadialBasis(num_radial=6, cutoff=5.0)
    dist = torch.tensor([0.3, 1.7, 3.2, 4.6, 4.99], **double)
    assert torch.autograd.gradcheck(lambda d: radial(d), (dist,))
    cosines = torch.tensor([-0.95, -0.3, 0.1, 0.7, 0.99], **double)
    assert torch.autograd.gradcheck(lambda c: circular_basis(c, 5), (cosines,))
    other = torch.tensor([0.5, -0.8, 0.2, 0.9, -0.1], **double)
    assert torch.autograd.gradcheck(lambda a, b: spherical_basis(a, b, 4), (cosines, other))
    vectors = [torch.nn.functional.normalize(torch.randn(6, 3, dtype=torch.float64), dim=-1) for _ in range(3)]
    vectors = [v.requires_grad_() for v in vectors]
    assert torch.autograd.gradcheck(dihedral_cosine, tuple(vectors))

    x = torch.linspace(-1, 1, 7, dtype=torch.float64)
    legendre_2 = (3 * x**2 - 1) / 2
    np.testing.assert_allclose(circular_basis(x, 3)[:, 2], np.sqrt(5 / (4 * np.pi)) * legendre_2, rtol=1e-12)
    # Y_l^0 are orthonormal on the sphere: ∫ Y_l Y_l' dΩ = 2π ∫ Y_l(x) Y_l'(x) dx = δ_ll'
    nodes, weights = np.polynomial.legendre.leggauss(20)
    values = circular_basis(torch.as_tensor(nodes), 5).numpy()
    np.testing.assert_allclose(2 * np.pi * values.T @ (weights[:, None] * values), np.eye(5), atol=1e-12)
    outer = spherical_basis(torch.tensor([0.3]), torch.tensor([-0.6]), 3).reshape(3, 3)
    expected = np.outer(circular_basis(torch.tensor([0.3]), 3), circular_basis(torch.tensor([-0.6]), 3))
    np.testing.assert_allclose(outer, expected, rtol=1e-6)

    envelope = PolynomialEnvelope(5)
    edge = torch.tensor([0.0, 1 - 1e-6, 1.0, 1.3], **double)
    value = envelope(edge)
    (slope,) = torch.autograd.grad(value.sum(), edge)
    np.testing.assert_allclose(value.detach(), [1, 0, 0, 0], atol=1e-9)
    np.testing.assert_allclose(slope[1:], 0, atol=1e-8)  # smooth at the cutoff: forces do not jump
    assert torch.all(radial(torch.tensor([5.0, 6.0], dtype=torch.float64)) == 0)

    # dihedral: cis 1, trans -1, perpendicular 0; three collinear atoms read 0 instead of rounding noise
    u_ab = torch.tensor([[1.0, 0, 0]] * 4, dtype=torch.float64)
    u_ac = torch.tensor([[0, 1.0, 0]] * 3 + [[-1.0, 0, 0]], dtype=torch.float64)
    u_bd = torch.tensor([[0, 1.0, 0], [0, -1.0, 0], [0, 0, 1.0], [0, 1.0, 0]], dtype=torch.float64)
    np.testing.assert_allclose(dihedral_cosine(u_ac, u_ab, u_bd), [1, -1, 0, 0], atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Interaction graphs: index sets against brute force on positions
# ---------------------------------------------------------------------------------------------------------------
def test_interaction_indices_match_brute_force(model):
    atoms = slab(6)
    graph = run(model, [atoms]).graph
    pos = torch.as_tensor(atoms.positions)

    def images(g):  # per edge: (centre, neighbour atom, neighbour image position)
        return [(int(t), int(s), pos[t] + v) for (s, t), v in zip(g.edge_index.T, g.edge_vec.detach())]

    def same(p, q):
        return bool(torch.allclose(p, q, atol=1e-6))

    main_edges, qint, ae = images(graph), images(graph.qint), images(graph.aeaint)
    # the main graph is symmetric and swap points at the counter-edge
    swap = graph.swap
    assert torch.equal(graph.edge_index[:, swap], graph.edge_index.flip(0))
    np.testing.assert_allclose(graph.edge_vec[swap].detach(), -graph.edge_vec.detach(), atol=1e-12)
    assert torch.equal(swap[swap], torch.arange(len(swap)))

    def triplet_set(trips):
        return set(zip(trips.inp.tolist(), trips.out.tolist()))

    def brute_triplets(in_edges, out_edges, same_graph):
        return {
            (i, o)
            for (i, (ti, si, pi)), (o, (to, so, po)) in itertools.product(enumerate(in_edges), enumerate(out_edges))
            if ti == to and (i != o if same_graph else not (si == so and same(pi, po)))
        }

    assert triplet_set(graph.triplets) == brute_triplets(main_edges, main_edges, True)
    assert triplet_set(graph.a2e) == brute_triplets(ae, main_edges, False)
    assert triplet_set(graph.e2a) == brute_triplets(main_edges, ae, False)

    # quadruplets d→b→a←c: b→a a quadruplet edge; d→b and c→a main edges; d is not a, c is not b, c is not d
    q = graph.quadruplets
    got = set(zip(q.inner.inp[q.to_inner].tolist(), q.outer.inp[q.to_outer].tolist(), q.out.tolist()))
    expected = set()
    for k, (a, b, pos_b) in enumerate(qint):
        shift = pos_b - pos[b]  # b's image, seen from a
        for c_edge, (a2, c, pos_c) in enumerate(main_edges):
            if a2 != a or (c == b and same(pos_c, pos_b)):
                continue
            for d_edge, (b2, d, pos_d) in enumerate(main_edges):
                pos_d = pos_d + shift
                if b2 == b and not same(pos_d, pos[a]) and not (d == c and same(pos_d, pos_c)):
                    expected.add((d_edge, k, c_edge))
    assert len(expected) > 100 and got == expected
    assert torch.equal(q.out, torch.sort(q.out).values)  # grouped by output edge, as the padded layout needs


# ---------------------------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------------------------
def test_feature_shapes_and_derived_edge_features_follow_the_kd_conventions(model):
    atoms = rattled_ethanol()
    out = run(model, [atoms])
    shapes = {name: tuple(value.shape[1:]) for name, value in out.features.items()}
    assert shapes == model.feature_shapes()
    assert shapes["node"] == (16,) and shapes["edge"] == (16,) and shapes["edge_vector"] == (3, 16)
    assert {"h1", "h2", "m1", "m2", "x0", "x1", "x2"} <= set(shapes)
    assert set(model.per_edge_features()) == {"edge", "m1", "m2"}
    num_edges = out.graph.edge_index.shape[1]
    assert all(out.features[name].shape[0] == num_edges for name in model.per_edge_features())
    assert out.features["node"].shape[0] == len(atoms)
    edge, index, n = out.features["edge"], out.graph.edge_index, len(atoms)
    torch.testing.assert_close(out.features["edge2node"], edge_to_node(edge, index, n))
    torch.testing.assert_close(out.features["edge_vector"], edge_to_vector(edge, index, out.graph.unit_vec, n))
    targets = TeacherTargets.from_output(out)
    assert torch.equal(targets.edge_cell_offsets, out.graph.cell_offsets)
    torch.testing.assert_close(targets.target_for("e2n"), edge_to_node(edge, index, n))
    torch.testing.assert_close(targets.target_for("v2v"), out.features["edge_vector"].detach())


def test_feature_layer_picks_a_block_and_changes_no_output():
    concat = numpy_outputs(run(gemnet(), [rattled_ethanol()]))
    after_h2 = numpy_outputs(run(gemnet(feature_layer="H2"), [rattled_ethanol()]))
    output_1 = numpy_outputs(run(gemnet(feature_layer="X1"), [rattled_ethanol()]))
    np.testing.assert_array_equal(after_h2["node"], concat["h2"])
    np.testing.assert_array_equal(after_h2["edge"], concat["m2"])
    np.testing.assert_array_equal(output_1["node"], concat["x1"])
    np.testing.assert_array_equal(after_h2["energy"], concat["energy"])
    assert not np.allclose(after_h2["node"], concat["node"])
    with pytest.raises(ConfigError, match="feature_layer 'U1'"):
        build_model("gemnet-oc-tiny", feature_layer="U1")


# ---------------------------------------------------------------------------------------------------------------
# Scale factors
# ---------------------------------------------------------------------------------------------------------------
def test_fitted_scale_factors_give_the_reference_variance_on_the_fitting_batch():
    fresh = gemnet(fit=False)
    assert fresh.needs_data_fit
    batch = fitting_batch()
    assert fresh.fit_to_data(batch) == [] and not fresh.needs_data_fit
    factors = [m for m in fresh.modules() if isinstance(m, ScaleFactor)]
    assert len(factors) > 20 and all(bool(f.fitted) for f in factors)
    assert len({round(float(f.scale), 6) for f in factors}) > len(factors) // 2  # measured, not a constant

    seen = []

    def record(module, args, kwargs, output):
        ref = kwargs.get("ref")
        seen.append((output.detach().var(dim=0).mean(), None if ref is None else ref.detach().var(dim=0).mean()))

    handles = [f.register_forward_hook(record, with_kwargs=True) for f in factors]
    fresh(batch)
    for handle in handles:
        handle.remove()
    assert len(seen) == len(factors)
    for out_var, ref_var in seen:
        assert float(out_var) == pytest.approx(1.0 if ref_var is None else float(ref_var), rel=1e-6)

    scales = [float(f.scale) for f in factors]
    assert fit_scale_factors(fresh, atoms_to_batch([slab(20)], torch.float64)) == []  # fitted ones are kept...
    assert [float(f.scale) for f in factors] == scales
    fit_scale_factors(fresh, atoms_to_batch([slab(20)], torch.float64), refit=True)  # ...unless refitted
    assert [float(f.scale) for f in factors] != scales


def test_a_batch_without_quadruplets_leaves_their_factors_unfitted():
    oc20 = gemnet(fit=False, qint_tags=[1, 2])
    unfitted = fit_scale_factors(oc20, atoms_to_batch([rattled_ethanol()], torch.float64))  # all tags 0
    assert unfitted and all(".quadruplet." in name for name in unfitted)
    assert oc20.needs_data_fit


# ---------------------------------------------------------------------------------------------------------------
# Training, checkpoints, teacher, student
# ---------------------------------------------------------------------------------------------------------------
def emt_frames(count, seed=0):
    frames = []
    for index in range(count):
        atoms = slab(seed + index)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces(apply_constraint=False)
        atoms.calc = None
        data = {"sid": f"emt-{seed + index}", "fid": 0, "origin": "dft", "teacher": "emt",
                "system_seed": seed + index, "relax_step": 0}
        frames.append(LabelledFrame(atoms, float(energy), forces, data))
    return frames


@pytest.mark.slow
def test_training_a_tiny_gemnet_beats_the_mean_predictor():
    frames = emt_frames(4)
    batch = atoms_to_batch([f.atoms for f in frames])
    energy = torch.tensor([f.energy for f in frames], dtype=torch.float32)
    forces = torch.tensor(np.concatenate([f.forces for f in frames]), dtype=torch.float32)
    natoms = batch.natoms.float()
    per_atom = float((energy / natoms).mean())

    def loss(pred_energy, pred_forces):
        return float((pred_energy - energy).abs().mean() + 10 * (pred_forces - forces).norm(dim=-1).mean())

    mean_predictor = loss(per_atom * natoms, torch.zeros_like(forces))
    torch.manual_seed(0)
    model = build_model("gemnet-oc-tiny")
    model.fit_energy_normalizer(per_atom, 0.1, float(forces.pow(2).mean().sqrt()))
    assert model.fit_to_data(batch) == []
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        optimizer.zero_grad()
        out = model(batch)
        total = (out.energy - energy).abs().mean() + 10 * (out.forces - forces).norm(dim=-1).mean()
        total.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model(batch)
    assert loss(out.energy, out.forces) < 0.25 * mean_predictor, (loss(out.energy, out.forces), mean_predictor)


def test_checkpoint_round_trip_keeps_the_fitted_scales(model, tmp_path):
    path = save_model(tmp_path / "gemnet.pt", model)
    loaded, _ = load_model(path, expect="gemnet-oc-tiny")
    assert not loaded.needs_data_fit
    scales = {k: v for k, v in model.state_dict().items() if k.endswith((".scale", ".fitted"))}
    assert len(scales) > 40
    for key, value in scales.items():
        assert torch.equal(loaded.state_dict()[key], value), key
    atoms = [rattled_ethanol(), slab(7)]
    before, after = run(model, atoms), run(loaded, atoms)
    assert torch.equal(before.energy, after.energy) and torch.equal(before.forces, after.forces)
    assert torch.equal(before.features["edge"], after.features["edge"])


@pytest.fixture(scope="module")
def emt_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("gemnet") / "emt"
    writer = DatasetWriter(path, {"kind": "test", "shard_count": 2})
    writer.open()
    frames = emt_frames(8, seed=30)
    writer.write_shard(0, frames[:4], {})
    writer.write_shard(1, frames[4:], {})
    writer.finalize(2, {})
    return path


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("gemnet-teacher") / "teacher.pt", gemnet(dtype=torch.float32))


def test_ckpt_teacher_predicts_labels_and_caches_per_atom_features(teacher_path, emt_dataset, tmp_path):
    from augkd.teachers import load_teacher
    from augkd.train.data import FrameDataset

    teacher = load_teacher(f"ckpt:{teacher_path}")
    atoms = [rattled_ethanol(), slab(8)]
    batched = teacher.predict(atoms_to_batch(atoms))
    assert batched.energy.shape == (2,) and not batched.features["edge"].requires_grad
    wanted = ["energy", "forces", "atom_energy", "node", "edge2node", "edge_vector"]
    labels = [teacher.label(a, wanted) for a in atoms]
    np.testing.assert_allclose(batched.energy.numpy(), [lab.energy for lab in labels], rtol=1e-5)
    for name in ("node", "edge2node", "edge_vector"):
        np.testing.assert_allclose(
            batched.features[name].numpy(), np.concatenate([lab.features[name] for lab in labels]), rtol=1e-4, atol=1e-5
        )
    with pytest.raises(ConfigError, match="edge has one row per edge"):
        teacher.label(atoms[0], ["energy", "edge"])

    refused = tmp_path / "refused"
    with pytest.raises(AugkdError):  # what `augkd label` reports with exit status 2
        config = LabelConfig(teacher=f"ckpt:{teacher_path}", teacher_kwargs={}, features=("edge",), atom_energy=False)
        run_job(LabelJob(emt_dataset, config), refused)
    assert not refused.exists()

    labelled = tmp_path / "labelled"
    config = LabelConfig(teacher=f"ckpt:{teacher_path}", teacher_kwargs={},
                         features=("node", "edge2node", "edge_vector"), atom_energy=True, feature_dtype="float32")
    run_job(LabelJob(emt_dataset, config), labelled)
    rows = FrameDataset([str(labelled)])
    row = rows[0]
    direct = teacher.predict(atoms_to_batch([rows.frame(0).atoms]))
    for name in ("node", "edge2node", "edge_vector"):
        cached, online = row.teacher["features"][name].numpy(), direct.features[name].numpy()
        np.testing.assert_allclose(cached, online, rtol=1e-5, atol=1e-5)


def train_config(data, model, steps, **sections):
    from augkd.config import compose
    from augkd.train.trainer import TrainConfig

    values = compose("train", "default", [f"steps={steps}", "batch_size=4", "eval_every=1000", "checkpoint_every=1000",
                                          "optim.lr=2e-3", f"model.name={model}"])
    values["data"]["train"], values["data"]["val"] = [str(data)], []
    for key, value in sections.items():
        values[key].update(value)
    return TrainConfig.from_dict(values)


@pytest.mark.slow
def test_trainer_fits_scales_and_trains_a_student_with_e2e_and_n2n(emt_dataset, teacher_path, tmp_path):
    from augkd.train.trainer import Trainer

    trainer = Trainer(train_config(emt_dataset, "gemnet-oc-tiny", 12,
                                   teacher={"mode": "online", "spec": f"ckpt:{teacher_path}", "kwargs": {}},
                                   kd={"losses": [{"name": "e2e", "lambda": 10.0}, {"name": "n2n", "lambda": 1.0}]}),
                      tmp_path / "run")
    assert not trainer.student.needs_data_fit and not trainer.ema.needs_data_fit  # fitted on the first batch
    assert set(trainer.heads) == {"e2e", "n2n"}
    trainer.fit(progress=False)
    with open(tmp_path / "run" / "train.csv") as handle:
        log = list(csv.DictReader(handle))
    e2e = [float(row["kd_e2e"]) for row in log]
    assert all(np.isfinite(e2e)) and np.mean(e2e[-3:]) < np.mean(e2e[:3])
    student, _ = load_model(tmp_path / "run" / "checkpoints" / "final.pt")
    assert not student.needs_data_fit
    # exported with the weights (the EMA copy averages the constant buffers too: equal up to rounding)
    for key, value in trainer.student.state_dict().items():
        if key.endswith(".scale"):
            torch.testing.assert_close(student.state_dict()[key], value, rtol=1e-5, atol=0)


def test_e2e_needs_per_edge_teacher_features(emt_dataset, tmp_path):
    from augkd.train.trainer import Trainer

    painn = save_model(tmp_path / "painn.pt", build_model("painn-tiny"))
    with pytest.raises(ConfigError, match="e2e needs teacher per-edge 'edge' features"):
        Trainer(train_config(emt_dataset, "gemnet-oc-tiny", 2,
                             teacher={"mode": "online", "spec": f"ckpt:{painn}", "kwargs": {}},
                             kd={"losses": [{"name": "e2e", "lambda": 1.0}]}), tmp_path / "run")
