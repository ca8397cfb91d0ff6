"""bench/distill_study.py end to end at toy size: a tiny EMT-labelled "DFT" set, the CHGNet teacher, both students,
every configuration (a–e), one seed, a few steps; results.json complete and finite, every student.pt loadable."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "distill_study.py"
SETTINGS = ("a-dft", "b-distill", "c-mix-a0.5-r1", "d-n2n-auto", "d-n2n-l100", "e-adv")
STUDENTS = ("painn-small", "schnet")


def toy_frames(metal: str, adsorbate: str, sid: str, frames: int, seed: int):
    """An OC20-style slab (tags 0/1/2, FixAtoms on tag 0) with an adsorbate, rattled copies labelled by EMT."""
    from ase.build import add_adsorbate, fcc111, molecule
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixAtoms

    slab = fcc111(metal, size=(2, 2, 3), vacuum=6.0)
    slab.set_tags(np.where(slab.get_tags() == 1, 1, 0))  # ase numbers layers from the top: 1 = surface
    n_metal = len(slab)
    species = molecule(adsorbate) if len(adsorbate) > 1 else adsorbate
    add_adsorbate(slab, species, 1.8, "ontop")
    tags = slab.get_tags()
    tags[n_metal:] = 2
    slab.set_tags(tags)
    slab.set_constraint(FixAtoms(mask=tags == 0))
    slab.pbc = True
    rng = np.random.default_rng(seed)
    out = []
    for fid in range(frames):
        atoms = slab.copy()
        free = tags != 0
        positions = atoms.get_positions()
        positions[free] += rng.normal(0, 0.05 * fid, size=(int(free.sum()), 3))
        atoms.set_positions(positions, apply_constraint=False)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces(apply_constraint=False)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        atoms.info.pop("adsorbate_info", None)  # not extxyz-writable
        atoms.info.update({"sid": sid, "fid": fid})
        out.append(atoms)
    return out


def write_toy_dft(folder: Path) -> Path:
    from ase.io import write

    folder.mkdir(parents=True, exist_ok=True)
    systems = {"train": [("Cu", "O"), ("Pt", "CO"), ("Cu", "H"), ("Pt", "O")], "test": [("Cu", "CO"), ("Pt", "H")]}
    for split, pairs in systems.items():
        frames = []
        for i, (metal, adsorbate) in enumerate(pairs):
            frames += toy_frames(metal, adsorbate, f"{split}-{metal}-{adsorbate}", 2, seed=i + 10 * (split == "test"))
        write(folder / f"{split}.extxyz", frames, format="extxyz")
    return folder


@pytest.mark.slow
def test_distill_study_toy_pipeline(tmp_path):
    dft = write_toy_dft(tmp_path / "dft")
    out = tmp_path / "study"
    command = [sys.executable, str(SCRIPT), "--quick", "--dft", str(dft), "--out", str(out), "--steps", "3",
               "--d1m-systems", "1", "--d1m-steps", "3", "--d1m-max-atoms", "80", "--md-steps", "2",
               "--md-repeats", "1", "--jobs", "1", "--mixes", "0.5:1"]
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["study"] == "distill_study"

    results = json.loads((out / "results.json").read_text())
    expected = {f"{student}_{setting}" for student in STUDENTS for setting in SETTINGS}
    assert set(results["configurations"]) == expected
    teacher = results["teacher"]["metrics"]
    assert all(math.isfinite(teacher[m]) for m in ("energy_mae", "force_mae", "force_cos", "efwt"))
    assert results["teacher"]["identity"]["name"].startswith("chgnet")

    from augkd.calculator import AugkdCalculator

    probe = toy_frames("Cu", "O", "probe", 1, seed=5)[0]
    for name, row in results["configurations"].items():
        scores = row["per_seed"]["0"]["metrics"]
        for metric in ("energy_mae", "force_mae", "force_cos", "efwt"):
            assert math.isfinite(scores[metric]), (name, metric)
            assert row[metric]["n"] == 1
        assert "error" not in row["per_seed"]["0"]["augkd_evaluate"], name
        for gap in ("gap_closed_energy_pct", "gap_closed_force_pct"):
            assert row[gap]["per_seed"], (name, gap)
        assert row["md_speed_over_teacher"] > 0
        student = out / name / "student.pt"
        assert Path(row["student_pt"]) == student and student.is_file()
        atoms = probe.copy()
        atoms.calc = AugkdCalculator(student, device="cpu", threads=1)
        assert math.isfinite(atoms.get_potential_energy())
        assert np.isfinite(atoms.get_forces()).all()
    assert results["data"]["rows"]["dft-train"] == 8 and results["data"]["rows"]["dft-test"] == 4
    assert results["best_configuration"]["config"] in expected
    assert all(Path(p).is_file() for p in results["plots"])
    assert any(Path(p).name.startswith("parity_") for p in results["plots"])
    table = (out / "table.md").read_text().splitlines()
    assert len(table) == 3 + len(expected) and table[2].startswith("| teacher chgnet |")
    assert {line.split(" | ")[0].lstrip("| ") for line in table[3:]} == expected

    # resumable: a second run finds every result and trains nothing
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["configurations"].keys() == expected
