"""Per-source element references in training: a source whose energies sit on another reference (shifted by
Σ n_Z·c_Z) trains the same student as an unshifted one with ``data.element_refs=fit``, and not with ``none``;
checkpoints carry the references, and predictions (evaluate, AugkdCalculator) are on the prediction origin's scale."""

import json

import ase.data
import ase.io
import numpy as np
import pytest
import torch
from ase.build import add_adsorbate, fcc100, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

from augkd.config import compose
from augkd.errors import ConfigError
from augkd.models.checkpoint import load_model
from augkd.element_refs import ElementReferences
from augkd.train.evaluate import evaluate_checkpoints
from augkd.train.trainer import TrainConfig, Trainer
from dft_files import import_files

#: per-element offsets (eV/atom) of the "other code": far larger than EMT's own energy spread
OFFSETS = {"Cu": -3.72, "Pt": -6.05, "O": -4.93, "H": -1.11}


def emt_frames(seed, count):
    """OC20-style Cu/Pt slabs with an O or H adsorbate, rattled, EMT energy and forces, tags and FixAtoms."""
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(count):
        build = (fcc111, fcc100)[index % 2]
        layers = 3 + (index // 8) % 2  # two slab thicknesses: compositions that fix every element's reference
        slab = build(("Cu", "Pt")[(index // 2) % 2], size=(2, 2, layers), vacuum=6.0)
        slab.set_tags(np.where(slab.positions[:, 2] > slab.positions[:, 2].min() + 1.0, 1, 0))
        add_adsorbate(slab, ("O", "H")[(index // 4) % 2], 1.8, "ontop")
        slab.info.clear()
        tags = slab.get_tags()
        tags[-1] = 2
        slab.set_tags(tags)
        slab.set_constraint(FixAtoms(indices=np.flatnonzero(tags == 0)))
        slab.positions += rng.normal(scale=0.08, size=slab.positions.shape) * (tags != 0)[:, None]
        slab.calc = EMT()
        energy, forces = slab.get_potential_energy(), slab.get_forces(apply_constraint=False)
        slab.calc = SinglePointCalculator(slab, energy=energy, forces=forces)
        frames.append(slab)
    return frames


def fit_frames_references(frames):
    from augkd.element_refs import fit_element_references

    return fit_element_references([a.numbers for a in frames], [a.get_potential_energy() for a in frames]).refs


def shifted(frames):
    out = []
    for atoms in frames:
        results = dict(atoms.calc.results)
        results["energy"] += sum(OFFSETS[s] for s in atoms.get_chemical_symbols())
        copy = atoms.copy()
        copy.calc = SinglePointCalculator(copy, **results)
        out.append(copy)
    return out


def imported(tmp_path, name, frames, origin):
    path = tmp_path / f"{name}.extxyz"
    ase.io.write(path, frames)
    out = tmp_path / name
    import_files([path], out, origin=origin)
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refs")
    other = emt_frames(1, 16)
    return {
        "dft": imported(tmp, "dft", emt_frames(0, 16), "dft"),
        "other": imported(tmp, "other", other, "other"),
        "other_shifted": imported(tmp, "other_shifted", shifted(other), "other"),
        "test": imported(tmp, "test", emt_frames(2, 8), "dft"),
    }


def train(sources, other, run, refs):
    values = compose("train", "default", [
        "steps=30", "batch_size=4", "eval_every=1000", "checkpoint_every=1000", "optim.lr=3e-3",
        "model.name=painn-tiny", f"data.element_refs={refs}",
    ])
    values["data"]["sources"] = [{"path": str(sources["dft"]), "origin": "dft"},
                                 {"path": str(sources[other]), "origin": "other"}]
    Trainer(TrainConfig.from_dict(values), run).fit(progress=False)
    return run / "checkpoints" / "final.pt"


def predictions(checkpoint, frames):
    from augkd.calculator import AugkdCalculator

    calculator = AugkdCalculator(str(checkpoint), device="cpu")
    energies = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calculator
        energies.append(atoms.get_potential_energy())
    return np.array(energies)


def test_shifted_source_trains_the_same_student_with_fitted_references(sources, tmp_path):
    test_frames = emt_frames(2, 8)
    plain = predictions(train(sources, "other", tmp_path / "plain", "fit"), test_frames)
    moved = predictions(train(sources, "other_shifted", tmp_path / "moved", "fit"), test_frames)
    assert np.abs(plain - moved).max() < 1e-3  # referenced targets are identical: the same student
    raw_plain = predictions(train(sources, "other", tmp_path / "raw_plain", "none"), test_frames)
    raw_moved = predictions(train(sources, "other_shifted", tmp_path / "raw_moved", "none"), test_frames)
    assert np.abs(raw_plain - raw_moved).mean() > 0.5  # without references the student learns the offsets


def test_checkpoint_carries_references_and_evaluate_says_which(sources, tmp_path):
    checkpoint = train(sources, "other_shifted", tmp_path / "run", "fit")
    _, extra = load_model(checkpoint)
    references = ElementReferences.from_extra(extra["element_refs"])
    assert references.predict_origin == "dft" and set(references.origins) == {"dft", "other"}
    # fitted on the shifted source's own rows: the least-squares fit of the unshifted rows plus the offsets
    unshifted = fit_frames_references(emt_frames(1, 16))
    for symbol, offset in OFFSETS.items():
        z = ase.data.atomic_numbers[symbol]
        assert references.refs("other")[z] - unshifted[z] == pytest.approx(offset, abs=1e-6)
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["element_refs"] == references.to_extra()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["element_refs"] == "fit"

    out = evaluate_checkpoints([str(checkpoint)], [sources["test"]])
    assert "energy MAE against the element references of origin 'dft'" in out
    assert "origin 'other'" in evaluate_checkpoints([str(checkpoint)], [sources["other_shifted"]])

    # evaluate's energy MAE is the calculator's, on the dataset's own scale
    frames = emt_frames(2, 8)
    error = np.abs(predictions(checkpoint, frames) - [a.get_potential_energy() for a in frames]).mean() * 1000
    report = evaluate_checkpoints([str(checkpoint)], [sources["test"]], as_json=True)
    metrics = json.loads(report.splitlines()[0])["final"]
    assert metrics["energy_mae"] == pytest.approx(error, rel=1e-3, abs=0.5)


def test_references_from_a_file_and_bad_settings(sources, tmp_path):
    from augkd.element_refs import save_references

    path = save_references(tmp_path / "refs.json", ElementReferences(
        {"dft": np.zeros(119), "other": np.zeros(119)}, "dft"))
    checkpoint = train(sources, "other", tmp_path / "file", str(path))
    _, extra = load_model(checkpoint)
    assert extra["element_refs"]["origins"]["other"] == [0.0] * 119
    with pytest.raises(ConfigError, match="nope.json"):
        train(sources, "other", tmp_path / "bad", str(tmp_path / "nope.json"))
    assert not (tmp_path / "bad").exists()
    only_dft = save_references(tmp_path / "dft.json", ElementReferences({"dft": np.zeros(119)}, "dft"))
    with pytest.raises(ConfigError, match="none for origin.*other"):
        train(sources, "other", tmp_path / "partial", str(only_dft))
    assert not (tmp_path / "partial").exists()


def test_checkpoint_teacher_predicts_on_the_prediction_origin_scale(sources, tmp_path):
    """A student used as a ``ckpt:`` teacher labels on the same scale as its AugkdCalculator."""
    from augkd.teachers import TeacherSpec

    checkpoint = train(sources, "other_shifted", tmp_path / "run", "fit")
    frames = emt_frames(2, 3)
    teacher = TeacherSpec(f"ckpt:{checkpoint}").load("cpu")
    labelled = [teacher.label(atoms).energy for atoms in frames]
    assert np.allclose(labelled, predictions(checkpoint, frames), atol=2e-3)
