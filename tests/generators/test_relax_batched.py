"""The batched relaxer: same minima and paths as ASE's FIRE, FixAtoms, per-system limits and failures, in-flight
batching, captured teacher outputs, batch limits, and ``augkd generate --relaxer batched`` end to end."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.cluster import Icosahedron
from conftest import cu_adslab
from generators.torch_potentials import MorseTeacher, painn_checkpoint_file

from augkd.errors import ConfigError
from augkd.generators.fire import FireParams
from augkd.generators.inflight import (
    BatchConfig,
    InFlightBatcher,
    MemoryEstimate,
    SystemCost,
    count_edges,
    fastest_size,
)
from augkd.generators.relax import RelaxConfig, relax
from augkd.generators.relax_batched import (
    Capture,
    RelaxStats,
    choose_relaxer,
    relax_batched,
)
from augkd.records import fixed_mask

FIRE = RelaxConfig(optimizer="FIRE", fmax=0.01, steps=400)


@pytest.fixture(autouse=True)
def single_thread(one_thread):
    """Every test here: one torch thread (conftest's one_thread)."""


def morse_systems():
    """Adslabs with FixAtoms and pbc (T, T, F), a free cluster (no pbc) and a periodic bulk cell: sizes 13–16."""
    systems = [cu_adslab(np.random.default_rng(seed)) for seed in range(3)]
    cluster = Icosahedron("Cu", 2)
    cluster.rattle(0.1, seed=1)
    cluster.center(vacuum=5.0)
    cell = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 1))
    cell.rattle(0.08, seed=2)
    return [*systems, cluster, cell]


def run(systems, teacher, config=FIRE, batching=BatchConfig(max_atoms=None), **kwargs):
    return dict(relax_batched(systems, teacher, config, batching, **kwargs))


def assert_same_paths(a, b, atol):
    assert len(a.frames) == len(b.frames)
    for x, y in zip(a.frames, b.frames):
        assert x.step == y.step
        np.testing.assert_allclose(x.positions, y.positions, rtol=0, atol=atol)
        np.testing.assert_allclose(x.forces, y.forces, rtol=0, atol=atol * 10)
        assert x.energy == pytest.approx(y.energy, abs=atol * 10)


@pytest.mark.parametrize("downhill_check", [False, True])
def test_batched_fire_reaches_the_minima_of_ase_fire(downhill_check):
    from ase.optimize import FIRE as AseFire

    systems = morse_systems()
    teacher = MorseTeacher()
    batched = run(systems, teacher, fire=FireParams(downhill_check=downhill_check))
    assert max(teacher.batch_sizes) == len(systems)  # they did share forward passes
    for i, atoms in enumerate(systems):
        reference = atoms.copy()
        reference.calc = teacher.calculator()
        optimizer = AseFire(reference, logfile=None, downhill_check=downhill_check)
        frames = [(reference.get_positions(), reference.get_potential_energy()) for _ in optimizer.irun(fmax=FIRE.fmax, steps=FIRE.steps)]
        ours = batched[i]
        assert ours.failure is None and ours.converged and optimizer.converged()
        # acceptance: same minimum (1 meV/atom, 0.01 Å) in the same number of steps ±10 %
        assert abs(ours.frames[-1].energy - frames[-1][1]) / len(atoms) < 1e-3
        assert np.abs(ours.frames[-1].positions - frames[-1][0]).max() < 0.01
        assert abs(len(ours.frames) - len(frames)) <= 0.1 * len(frames)
        # stronger: the very same path (ASE's arithmetic, float64 teacher)
        assert len(ours.frames) == len(frames)
        for frame, (positions, energy) in zip(ours.frames, frames):
            np.testing.assert_allclose(frame.positions, positions, rtol=0, atol=1e-9)


def test_frames_are_recorded_as_the_ase_path_records_them():
    systems = morse_systems()[:2]
    teacher = MorseTeacher()
    config = RelaxConfig(optimizer="FIRE", fmax=0.01, steps=6)
    batched = run(systems, teacher, config)
    for i, atoms in enumerate(systems):
        reference = relax(atoms, teacher.calculator(), config)
        ours = batched[i]
        assert (ours.converged, ours.failure, ours.error) == (reference.converged, reference.failure, reference.error)
        assert [f.step for f in ours.frames] == list(range(7))
        assert_same_paths(ours, reference, atol=1e-9)
        assert np.abs(ours.frames[0].forces[fixed_mask(atoms)]).max() > 0 if fixed_mask(atoms).any() else True


def test_fixed_atoms_never_move():
    systems = morse_systems()
    trajectories = run(systems, MorseTeacher(), RelaxConfig(fmax=1e-4, steps=60))
    for i, atoms in enumerate(systems):
        fixed = fixed_mask(atoms)
        assert fixed.any() == (i < 3)
        for frame in trajectories[i].frames:
            np.testing.assert_array_equal(frame.positions[fixed], atoms.positions[fixed])
        assert np.abs(trajectories[i].frames[-1].positions[~fixed] - atoms.positions[~fixed]).max() > 0.01


def test_exploding_system_is_dropped_and_the_others_keep_their_paths():
    systems = morse_systems()
    systems[1].numbers[-1] = 79  # the system that will blow up
    reference = run(systems, MorseTeacher())
    trigger = reference[1].frames[6].energy  # it diverges once it gets below its energy at step 6
    teacher = MorseTeacher(explode_element=79, explode_below=trigger + 1e-9)
    exploded = run(systems, teacher)
    blown = exploded[1]
    assert blown.failure == "nonfinite_labels" and not blown.converged
    assert len(blown.frames) == 6 and all(np.isfinite(f.forces).all() for f in blown.frames)
    for i in (0, 2, 3, 4):
        assert exploded[i].failure is None and exploded[i].converged
        assert_same_paths(exploded[i], reference[i], atol=1e-9)


class RaisingTeacher(MorseTeacher):
    """Raises whenever a batch holds gold."""

    def predict(self, batch):
        if bool((batch.atomic_numbers == 79).any()):
            raise RuntimeError("no parameters for Au")
        return super().predict(batch)


def test_teacher_error_fails_only_the_system_that_causes_it():
    systems = morse_systems()
    systems[2].numbers[-1] = 79
    stats = RelaxStats()
    trajectories = run(systems, RaisingTeacher(), stats=stats)
    assert trajectories[2].failure == "calculator_error" and "no parameters for Au" in trajectories[2].error
    assert trajectories[2].frames == [] and stats.isolated_errors == 1
    reference = run(systems[:2] + systems[3:], MorseTeacher())
    for i, j in ((0, 0), (1, 1), (3, 2), (4, 3)):
        assert_same_paths(trajectories[i], reference[j], atol=1e-9)


class SmallMemoryTeacher(MorseTeacher):
    """Runs out of device memory on batches of more than 30 atoms."""

    def predict(self, batch):
        if batch.pos.shape[0] > 30:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().predict(batch)


def test_out_of_memory_halves_the_limit_and_loses_nothing():
    systems = morse_systems()
    stats = RelaxStats()
    trajectories = run(systems, SmallMemoryTeacher(), batching=BatchConfig(max_atoms=200), stats=stats)
    # one failed pass halves the limit (74 atoms -> 37); later passes run in chunks within it and fit
    assert stats.out_of_memory == 1 and stats.max_atoms == sum(len(a) for a in systems) // 2
    reference = run(systems, MorseTeacher())
    for i in range(len(systems)):
        assert trajectories[i].failure is None
        assert_same_paths(trajectories[i], reference[i], atol=1e-9)


def test_in_flight_batching_gives_the_paths_of_batch_size_one():
    systems = morse_systems() + [cu_adslab(np.random.default_rng(seed)) for seed in (10, 11)]
    alone = run(systems, MorseTeacher(), batching=BatchConfig(max_atoms=None, max_systems=1))
    teacher = MorseTeacher()
    stats = RelaxStats()
    in_flight = run(systems, teacher, batching=BatchConfig(max_atoms=40), stats=stats)
    # the batch really was in flight: at most 40 atoms, systems replaced as others finished
    assert stats.largest_batch_atoms <= 40 and stats.largest_batch_systems >= 2
    assert len(set(teacher.batch_sizes)) > 1
    assert stats.forward_passes < sum(len(t.frames) for t in in_flight.values()) / 2
    for i in range(len(systems)):
        assert in_flight[i].converged
        assert_same_paths(in_flight[i], alone[i], atol=1e-9)


def test_per_system_step_limits():
    systems = morse_systems()
    limits = [0, 3, 7, 2, 5]
    trajectories = run(systems, MorseTeacher(), RelaxConfig(fmax=1e-6, steps=100), max_steps=limits)
    assert [len(trajectories[i].frames) for i in range(5)] == [n + 1 for n in limits]
    assert not any(t.converged for t in trajectories.values())
    with pytest.raises(ConfigError, match="3 entries for 5"):
        run(systems, MorseTeacher(), max_steps=[1, 2, 3])


def test_captured_outputs_are_the_teachers_on_the_chosen_frames():
    systems = morse_systems()[:3]
    teacher = MorseTeacher()
    capture = Capture(("node", "atom_energy"), lambda index, step, last: step % 4 == index or last)
    trajectories = run(systems, teacher, RelaxConfig(fmax=0.01, steps=30), capture=capture)
    for i, atoms in enumerate(systems):
        frames = trajectories[i].frames
        captured = [f.step for f in frames if f.outputs is not None]
        assert captured == [s for s in range(len(frames)) if s % 4 == i or s == len(frames) - 1]
        for frame in frames:
            if frame.outputs is None:
                continue
            moved = atoms.copy()
            moved.positions = frame.positions
            labels = teacher.label(moved, ["energy", "forces", "atom_energy", "node"])
            np.testing.assert_allclose(frame.outputs["node"], labels.features["node"], atol=1e-6)
            np.testing.assert_allclose(frame.outputs["atom_energy"], labels.atom_energy, atol=1e-6)
            assert frame.outputs["atom_energy"].sum() == pytest.approx(frame.energy, abs=1e-5)
    with pytest.raises(ConfigError, match="cannot capture"):
        run(systems, teacher, capture=Capture(("vector",)))


def test_ckpt_painn_teacher_follows_the_ase_path(tmp_path):
    """Our own checkpoint models batch: a float32 PaiNN with gradient forces, batched vs ASE FIRE step by step."""
    from augkd.models import build_model
    from augkd.models.checkpoint import save_model
    from augkd.teachers import load_teacher

    torch.manual_seed(0)
    model = build_model("painn-tiny", direct_forces=False, max_neighbors=1000)
    model.fit_energy_normalizer(-3.0, 20.0)  # forces of a few eV/Å, so that FIRE moves
    path = save_model(tmp_path / "painn.pt", model)
    teacher = load_teacher(f"ckpt:{path}")
    systems = morse_systems()
    config = RelaxConfig(optimizer="FIRE", fmax=1e-3, steps=12)
    batched = run(systems, teacher, config)
    for i, atoms in enumerate(systems):
        reference = relax(atoms, teacher.calculator(), config)
        assert reference.failure is None and len(reference.frames) == 13
        # float32 sums differ with the batch's make-up; FIRE keeps those differences small over 12 steps
        assert_same_paths(batched[i], reference, atol=2e-4)


def test_in_flight_batcher_admits_in_order_within_limits():
    costs = [SystemCost(10, 100), SystemCost(30, 300), SystemCost(5, 50), SystemCost(80, 800), SystemCost(5, 50)]
    batcher = InFlightBatcher(costs, max_atoms=40, max_edges=350)
    assert batcher.admit(0, 0, 0) == [0]  # 0 + 1 would exceed 350 edges; 2 must not jump the queue
    assert batcher.admit(10, 100, 1) == []
    assert batcher.admit(0, 0, 0) == [1, 2]
    assert batcher.admit(0, 0, 0) == [3]  # too large for the limits: runs alone
    assert batcher.admit(0, 0, 0) == [4] and not batcher
    assert InFlightBatcher(costs, None, max_systems=2).admit(0, 0, 0) == [0, 1]
    assert MemoryEstimate(per_atom=1e6, fixed=2e8, free=1e9).max_atoms(0.5) == 300


def test_fastest_size_stops_once_speed_has_clearly_fallen():
    measured = []

    def rate(size):
        measured.append(size)
        return {10: 100.0, 20: 150.0, 40: 140.0, 80: 110.0, 160: 500.0}[size]

    assert fastest_size(rate, [10, 20, 40, 80, 160]) == (20, {10: 100.0, 20: 150.0, 40: 140.0, 80: 110.0})
    assert measured == [10, 20, 40, 80]  # 110 < 0.8 · 150: 160 is never timed
    assert fastest_size(lambda size: float(size), [10, 20, 40])[0] == 40


def test_edge_counts_and_auto_limit_are_measured():
    atoms = cu_adslab(np.random.default_rng(0))
    edges = count_edges(atoms, 6.0)
    assert edges == len(__import__("ase.neighborlist", fromlist=["x"]).neighbor_list("i", atoms, 6.0))
    assert count_edges(atoms, 6.0, max_neighbors=10) == 10 * len(atoms)
    stats = RelaxStats()
    systems = morse_systems()
    auto = BatchConfig(max_atoms="auto", memory_fraction=0.5)
    teacher = MorseTeacher()
    trajectories = run(systems, teacher, batching=auto, stats=stats)
    assert stats.max_atoms is not None and stats.max_atoms >= max(len(a) for a in systems)
    assert all(t.converged for t in trajectories.values())
    # speed measured at 1, 2, 4, ... copies of the median system, within memory and the atoms there are
    typical = sorted(len(a) for a in systems)[len(systems) // 2]
    sizes = list(stats.atoms_per_s)
    assert sizes == [typical * 2**j for j in range(len(sizes))] and all(v > 0 for v in stats.atoms_per_s.values())
    assert max(sizes) <= min(stats.memory_max_atoms, sum(len(a) for a in systems))
    assert stats.max_atoms == max(max(stats.atoms_per_s, key=stats.atoms_per_s.get), max(len(a) for a in systems))
    calls = len(teacher.batch_sizes)
    again = RelaxStats()
    run(systems, teacher, batching=auto, stats=again)  # same teacher, same sizes: measured once per process
    assert (again.max_atoms, again.atoms_per_s) == (stats.max_atoms, stats.atoms_per_s)
    assert len(teacher.batch_sizes) - calls == again.forward_passes
    teacher = MorseTeacher()
    by_edges = run(systems, teacher, batching=BatchConfig(max_atoms=None, max_edges=2 * edges, edge_cutoff=6.0))
    assert all(t.converged for t in by_edges.values()) and max(teacher.batch_sizes) == 2
    with pytest.raises(ConfigError, match="edge_cutoff"):  # the Morse teacher does not say its cutoff
        run(systems, MorseTeacher(), batching=BatchConfig(max_edges=100))


@pytest.mark.parametrize(
    "requested, teacher, optimizer, expect",
    [
        ("auto", "ckpt:/m.pt", None, ("batched", "FIRE", False)),
        ("auto", "chgnet", "FIRE", ("batched", "FIRE", False)),
        ("auto", "emt", None, ("ase", "BFGS", True)),
        ("auto", "sevennet", "BFGS", ("ase", "BFGS", True)),
        ("ase", "chgnet", None, ("ase", "BFGS", False)),
        ("batched", "fairchem:/x.pt", None, ("batched", "FIRE", False)),
    ],
)
def test_relaxer_choice(requested, teacher, optimizer, expect):
    choice = choose_relaxer(requested, teacher, optimizer)
    assert (choice.relaxer, choice.optimizer, choice.note is not None) == expect
    if choice.note:
        assert "one system at a time" in choice.note


def test_impossible_relaxer_requests_are_refused():
    with pytest.raises(ConfigError, match="needs a torch teacher.*emt.*--relaxer ase"):
        choose_relaxer("batched", "emt", None)
    with pytest.raises(ConfigError, match="FIRE only.*BFGS"):
        choose_relaxer("batched", "chgnet", "BFGS")
    with pytest.raises(ConfigError, match="relaxer 'fast'"):
        choose_relaxer("fast", "chgnet", None)
    for bad in ({"max_atoms": 0}, {"max_atoms": "many"}, {"max_edges": -1}, {"memory_fraction": 1.5}):
        with pytest.raises(ConfigError):
            BatchConfig(**bad)


# -- augkd generate --relaxer batched --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def painn_checkpoint(tmp_path_factory):
    return painn_checkpoint_file(tmp_path_factory.mktemp("ckpt") / "painn-tiny.pt")


def batched_job(checkpoint, **settings):
    """``augkd generate`` with the batched relaxer on a ckpt: teacher, caching node and vector features and per-atom
    energies: 4 systems of at most 40 atoms, 12 FIRE steps, 90 atoms per teacher call."""
    from conftest import small_generate_job

    settings = {"systems": 4, "shards": 2, "relaxer": "batched", "batch__max_atoms": 90, "relax__steps": 12,
                "systems_sampler__max_atoms": 40, **settings}
    return small_generate_job("frames.features=[node,vector]", "frames.atom_energy=true", teacher=f"ckpt:{checkpoint}",
                              **settings)


def generate(job, out):
    """Run a generate job with one torch thread: gradient forces of float32 models change in the last bit with the
    thread count (the backward pass's scatter sums), and rows must be compared at equal settings."""
    from conftest import run_job

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_job(job, out)
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def batched_dataset(tmp_path_factory, painn_checkpoint):
    out = tmp_path_factory.mktemp("batched") / "d1M"
    generate(batched_job(painn_checkpoint), out)
    return out


def test_generate_batched_writes_a_valid_dataset_with_cached_features(batched_dataset):
    from fairchem.core.datasets import AseDBDataset

    from augkd.io.dataset import load_manifest, read_frames
    from augkd.train.data import cached_teacher_outputs

    manifest = load_manifest(batched_dataset)
    assert manifest["config"]["relaxer"] == "batched" and manifest["config"]["batch"]["max_atoms"] == 90
    assert {s["relaxer"] for s in manifest["shards"]} == {"batched"} and {s["optimizer"] for s in manifest["shards"]} == {"FIRE"}
    totals = manifest["totals"]
    assert totals["rows"] > 0 and totals["frames_visited"] > 4  # systems moved
    assert totals["frames_visited"] == totals["frames_kept"] + sum(totals["dropped_frames"].values())
    frames = list(read_frames(batched_dataset))
    dataset = AseDBDataset({"src": str(batched_dataset / "shards"), "a2g_args": {"r_energy": True, "r_forces": True}})
    assert len(dataset) == len(frames) == totals["rows"]
    for frame in frames:
        assert frame.fixed.any() and frame.data["relax_step"] == frame.data["fid"]
        cached = cached_teacher_outputs(frame.data)
        n = len(frame.atoms)
        assert cached["features"]["node"].shape == (n, 32) and cached["features"]["vector"].shape == (n, 3, 32)
        assert cached["energy"].item() == pytest.approx(frame.energy, rel=1e-6)
        assert cached["atom_energy"].sum().item() == pytest.approx(frame.energy, rel=1e-4)
        np.testing.assert_allclose(cached["forces"].numpy(), frame.forces, atol=1e-5)


def test_generate_batched_is_deterministic(batched_dataset, painn_checkpoint, tmp_path):
    from generators.test_d1m import assert_same_rows, rows_of

    generate(batched_job(painn_checkpoint), tmp_path / "again")
    assert_same_rows(rows_of(batched_dataset), rows_of(tmp_path / "again"))


def test_generate_cached_features_match_the_teacher(batched_dataset, painn_checkpoint):
    from augkd.io.dataset import read_frames
    from augkd.teachers import load_teacher
    from augkd.train.data import cached_teacher_outputs

    teacher = load_teacher(f"ckpt:{painn_checkpoint}")
    for frame in list(read_frames(batched_dataset))[:5]:
        labels = teacher.label(frame.atoms, ["energy", "forces", "node"])
        cached = cached_teacher_outputs(frame.data)
        np.testing.assert_allclose(cached["features"]["node"].numpy(), labels.features["node"], atol=2e-2, rtol=1e-2)
        assert frame.energy == pytest.approx(labels.energy, abs=1e-3)


def test_ase_relaxer_caches_the_same_outputs_by_labelling_kept_frames(painn_checkpoint, tmp_path):
    from augkd.io.dataset import load_manifest, read_frames
    from augkd.teachers import load_teacher
    from augkd.train.data import cached_teacher_outputs

    out = tmp_path / "ase"
    generate(batched_job(painn_checkpoint, relaxer="ase", systems=2, shards=1), out)
    assert {s["relaxer"] for s in load_manifest(out)["shards"]} == {"ase"}
    teacher = load_teacher(f"ckpt:{painn_checkpoint}")
    frames = list(read_frames(out))
    assert frames
    for frame in frames:
        cached = cached_teacher_outputs(frame.data)
        labels = teacher.label(frame.atoms, ["energy", "forces", "atom_energy", "vector"])
        np.testing.assert_allclose(cached["features"]["vector"].numpy(), labels.features["vector"], atol=2e-2, rtol=1e-2)
        np.testing.assert_allclose(cached["atom_energy"].numpy(), labels.atom_energy, atol=1e-4)


def test_clean_slabs_for_the_surface_check_share_the_batch(painn_checkpoint, monkeypatch):
    from augkd.generators import d1m

    config = d1m.GenerateConfig.from_dict({
        "systems": 3, "shards": 1, "seed": 7, "teacher": f"ckpt:{painn_checkpoint}", "relaxer": "batched",
        "relax": {"fmax": 0.1, "steps": 8}, "batch": {"max_atoms": 60},
        "systems_sampler": {"elements": ["Cu", "Pt", "O", "H", "C", "N"], "max_atoms": 40, "max_miller": 1},
        "filters": {"drop_anomalies": ["surface_changed"], "surface_reference": "relaxed_slab"},
        "frames": {"fraction": 1.0},
    })
    runs = []
    real = d1m.relax_batched

    def recording(work, *args, **kwargs):
        runs.append([len(atoms) for atoms in work])
        yield from real(work, *args, **kwargs)

    monkeypatch.setattr(d1m, "relax_batched", recording)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = d1m.generate_shard(config, 0)
        again = d1m.generate_shard(config, 0)  # no slab cache between shards: the same batches, the same rows
    finally:
        torch.set_num_threads(previous)
    systems = [d1m.prepare(config).sampler.sample(7, i) for i in range(3)]
    slabs = list(dict.fromkeys(s.slab_key for s in systems))
    # one in-flight run per shard: the unique clean slabs first, then the adslabs
    assert runs[0] == [len(next(s.slab for s in systems if s.slab_key == k)) for k in slabs] + [len(s.atoms) for s in systems]
    assert result.stats["systems"] == 3 and result.stats["frames_visited"] > 3
    assert "slab_relaxation_failed" not in result.stats["dropped_systems"]
    assert [f.data["sid"] for f in result.frames] == sorted(f.data["sid"] for f in result.frames)  # index order
    assert len(result.frames) == len(again.frames)
    for x, y in zip(result.frames, again.frames):
        np.testing.assert_array_equal(x.atoms.positions, y.atoms.positions)
        np.testing.assert_array_equal(x.forces, y.forces)


def assert_batched_follows_ase(teacher, atol):
    systems = [cu_adslab(np.random.default_rng(seed)) for seed in range(3)]
    config = RelaxConfig(optimizer="FIRE", fmax=1e-3, steps=5)
    batched = run(systems, teacher, config)
    for i, atoms in enumerate(systems):
        reference = relax(atoms, teacher.calculator(), config)
        assert reference.failure is None and len(reference.frames) == 6
        assert_same_paths(batched[i], reference, atol=atol)


def test_fairchem_teacher_batches_and_follows_the_ase_path(tmp_path):
    """fairchem v2 checkpoints predict on a batch natively (a tiny random eSEN-style model here)."""
    from teachers.fairchem_tiny import save_tiny_fairchem_checkpoint

    from augkd.teachers import load_teacher

    path = tmp_path / "tiny.pt"
    save_tiny_fairchem_checkpoint(path)
    assert_batched_follows_ase(load_teacher(f"fairchem:{path}"), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["chgnet", "sevennet"])
def test_chgnet_and_sevennet_batch_and_follow_the_ase_path(spec):
    """Their adapters' ``predict`` takes a batch (CHGNet runs it as one graph batch, SevenNet one structure at a
    time): batched FIRE tracks ASE FIRE with the same teacher."""
    from augkd.teachers import load_teacher

    assert_batched_follows_ase(load_teacher(spec), atol=1e-5)
