"""``augkd export`` and ``AugkdCalculator``: the exported student predicts what its checkpoint predicts, in a fresh
process (bad files on the command line: tests/cli/test_student_cli.py)."""

import warnings

import numpy as np
import pytest
import torch
from ase.io import write

from augkd.calculator import AugkdCalculator
from augkd.models import build_model, save_model
from augkd.student.export import FORMAT, export_student, load_student
from student.student_helpers import checkpoint_predictions, exported, fresh_process_predictions, slab, trained_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return exported(tmp_path_factory)


def test_export_file_layout(run, student):
    payload = torch.load(student, weights_only=True)  # plain tensors and values: no code runs on load
    assert payload["format"] == FORMAT and payload["version"] == 1
    assert payload["model"]["name"] == "painn-tiny" and payload["model"]["direct_forces"] is False
    assert payload["neighbors"] == {"cutoff": 6.0, "max_neighbors": 1000, "skin": 1.0}
    assert all(t.dtype == torch.float32 for t in payload["state_dict"].values() if t.is_floating_point())
    assert not any("kd_heads" in key for key in payload["state_dict"])
    assert payload["normalizer"]["force_scale"] > 0
    assert payload["provenance"]["source"] == str(run / "checkpoints" / "final.pt")  # no validation: no best.pt
    assert len(payload["provenance"]["source_sha256"]) == 64 and payload["provenance"]["step"] == 20
    assert payload["torchscript"].dtype == torch.uint8 and payload["torchscript"].numel() > 1000


def test_exported_student_equals_its_checkpoint_in_a_fresh_process(run, student, tmp_path):
    structures = [slab(seed=1), slab((2, 2, 4), seed=2, adsorbate="H")]
    write(tmp_path / "structures.traj", structures)
    expected = checkpoint_predictions(run / "checkpoints" / "final.pt", structures)
    got = fresh_process_predictions(student, tmp_path / "structures.traj")
    for (energy, forces), row in zip(expected, got):
        assert row["energy"] == pytest.approx(energy, abs=1e-5)
        np.testing.assert_allclose(np.array(row["forces"]), forces, atol=1e-4)


def test_every_source_of_a_student_predicts_the_same(run, student):
    """Exported (scripted or eager), best.pt, the run directory, and last.pt's EMA weights (= final.pt)."""
    atoms = slab(seed=3)
    results = {}
    for name, path, script in [("export", student, True), ("export-eager", student, False),
                               ("final", run / "checkpoints" / "final.pt", True),
                               ("last", run / "checkpoints" / "last.pt", True)]:
        calc = AugkdCalculator(path, device="cpu", threads=1, torchscript=script)
        assert isinstance(calc.potential, torch.jit.ScriptModule) == (name == "export")
        atoms.calc = calc
        results[name] = (atoms.get_potential_energy(), atoms.get_forces(apply_constraint=False))
    assert results["export-eager"][0] == pytest.approx(results["export"][0], abs=1e-5)
    np.testing.assert_allclose(results["last"][1], results["final"][1], atol=1e-6)
    assert results["last"][0] == pytest.approx(results["final"][0], abs=1e-6)


def test_element_references_are_added_and_unseen_elements_warn(tmp_path):
    torch.manual_seed(0)
    model = build_model("schnet-tiny")
    refs = [0.0] * 119
    refs[29], refs[8] = -3.5, -1.25
    extra = {"element_refs": {"origins": {"dft": refs, "synthetic": [9.0] * 119}, "predict_origin": "dft"},
             "species": [29], "teacher": {"name": "emt"}, "datasets": ["abc"], "val_metrics": {"force_mae": 0.1}}
    plain = save_model(tmp_path / "plain.pt", model, {})
    referenced = save_model(tmp_path / "refs.pt", model, extra)
    out = export_student(referenced, tmp_path / "student.pt")
    assert load_student(out).provenance["teacher"] == {"name": "emt"}
    atoms = slab(seed=4)  # 27 Cu + 1 O
    energies = {}
    for name, path in (("plain", plain), ("export", out)):
        atoms.calc = AugkdCalculator(path, device="cpu", threads=1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            energies[name] = atoms.get_potential_energy()
        unseen = [str(w.message) for w in caught if "never saw" in str(w.message)]
        assert unseen == ([] if name == "plain" else [f"{out}: the structure holds O, which the student never saw "
                                                        "in training"])
    assert energies["export"] - energies["plain"] == pytest.approx(27 * -3.5 - 1.25, abs=1e-4)


def test_a_schnet_student_runs_on_tabulated_filters_with_its_checkpoints_numbers(tmp_path):
    """The calculator swaps SchNet's filter networks for tables and compiles that model again; the numbers stay
    the checkpoint's (the file keeps the networks)."""
    torch.manual_seed(0)
    model = build_model("schnet-tiny", num_gaussians=200, hidden_channels=32, num_filters=32)
    model.fit_energy_normalizer(-0.1, 0.7)  # small totals: the checkpoint's float32 sum is then exact to 1e-5
    checkpoint = save_model(tmp_path / "schnet.pt", model, {})
    out = export_student(checkpoint, tmp_path / "student.pt")
    structures = [slab(seed=5), slab((2, 2, 4), seed=6, adsorbate="H")]
    for (energy, forces), atoms in zip(checkpoint_predictions(checkpoint, structures), structures):
        calc = AugkdCalculator(out, device="cpu", threads=1)
        assert isinstance(calc.potential, torch.jit.ScriptModule) and calc.model.filter_tables.numel() > 0
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-5)
        np.testing.assert_allclose(atoms.get_forces(apply_constraint=False), forces, atol=1e-4)
        assert np.abs(forces).max() > 1e-2


def test_the_calculator_recomputes_when_positions_change_and_only_then(student):
    atoms = slab(seed=7)
    calc = AugkdCalculator(student, device="cpu", threads=1)
    atoms.calc = calc
    first = atoms.get_forces().copy()
    atoms.get_potential_energy()
    assert calc.timings["calls"] == 1
    atoms.set_initial_magnetic_moments([1.0] * len(atoms))  # nothing the student reads
    atoms.get_forces()
    assert calc.timings["calls"] == 1
    atoms.positions[-1] += [0.05, 0.0, 0.0]
    assert calc.check_state(atoms) == ["positions"]
    moved = atoms.get_forces()
    assert not np.allclose(moved, first)
    fresh = atoms.copy()
    fresh.calc = AugkdCalculator(student, device="cpu", threads=1)
    np.testing.assert_allclose(fresh.get_forces(), moved, atol=1e-6)  # float32 sums in another edge order
    assert atoms.get_potential_energy() == pytest.approx(fresh.get_potential_energy(), abs=1e-5)
    atoms.cell[2, 2] += 1.0
    assert "cell" in calc.check_state(atoms)
    atoms.get_forces()
    assert calc.timings["calls"] == 3


def test_a_trained_student_records_its_species_and_training_sets(tmp_path_factory, run, student):
    """A real training run's export says which elements it saw and which data taught it (not only hand-made
    checkpoints): the species of every training row, each training set's manifest hash and labeller."""
    from augkd.hashing import sha256_file
    from augkd.train.data import FrameDataset
    from student.student_helpers import emt_data

    data = emt_data(tmp_path_factory)
    rows = FrameDataset([data])
    species = sorted({int(z) for i in range(len(rows)) for z in rows.frame(i).atoms.numbers})
    payload = torch.load(student, weights_only=True)
    assert payload["species"] == species
    provenance = payload["provenance"]
    assert provenance["datasets"] == [{"path": str(data.resolve()), "origin": "synthetic",
                                       "manifest_sha256": sha256_file(data / "manifest.json"),
                                       "labelled_by": "emt"}]
    assert provenance["teacher"] is None and provenance["val_metrics"] is None  # cached labels only; no --val
    assert load_student(run / "checkpoints" / "last.pt").species == species  # the trainer state carries them too
