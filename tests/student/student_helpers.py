"""Shared by the student tests: EMT data and tiny students trained once per session.

A module, not a conftest (tests import the top-level conftest by name): each test module's fixture asks here, and
the first asker trains; later ones reuse the run.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from augkd.student.export import export_student
from conftest import run_job, small_generate_job, train_run

_CACHE: dict[str, Path] = {}
REPO = Path(__file__).resolve().parents[2]


def emt_data(factory) -> Path:
    if "data" not in _CACHE:
        out = factory.mktemp("student-data") / "emt"
        run_job(small_generate_job(systems=6, shards=2), out)
        _CACHE["data"] = out
    return _CACHE["data"]


def trained_run(factory, direct_forces: bool = False) -> Path:
    """A painn-tiny run (20 steps on EMT data): −∇E forces and no neighbour limit (a smooth energy) unless
    ``direct_forces``, which trains the paper's direct-force head."""
    key = f"run-{direct_forces}"
    if key not in _CACHE:
        run = factory.mktemp("student-run") / "run"
        overrides = ["+model.overrides.direct_forces=true"] if direct_forces else [
            "+model.overrides.direct_forces=false", "+model.overrides.max_neighbors=1000"]
        train_run(run, *overrides, data__train=[str(emt_data(factory))], model__name="painn-tiny", steps=20,
                  batch_size=4, optim__lr=3e-3)
        _CACHE[key] = run
    return _CACHE[key]


def exported(factory, direct_forces: bool = False) -> Path:
    key = f"student-{direct_forces}"
    if key not in _CACHE:
        out = factory.mktemp("student-file") / "student.pt"
        export_student(trained_run(factory, direct_forces), out)
        _CACHE[key] = out
    return _CACHE[key]


def slab(size=(3, 3, 3), seed: int = 0, adsorbate: str = "O"):
    """A Cu(111) slab with an adsorbate, bottom layer fixed, pbc (T, T, F), rattled by 0.05 Å."""
    from ase.build import add_adsorbate, fcc111
    from ase.constraints import FixAtoms

    atoms = fcc111("Cu", size=size, vacuum=8.0)
    bottom = atoms.positions[:, 2] < atoms.positions[:, 2].min() + 0.1
    add_adsorbate(atoms, adsorbate, height=1.5, position="fcc")
    atoms.set_constraint(FixAtoms(indices=np.flatnonzero(bottom)))
    atoms.rattle(0.05, seed=seed)
    return atoms


def fresh_process_predictions(path: Path, structures: Path) -> list[dict]:
    """Energies and forces from ``AugkdCalculator(path)`` in a new Python process, for each image of ``structures``."""
    script = (
        "import json, sys\n"
        "from ase.io import read\n"
        "from augkd.calculator import AugkdCalculator\n"
        f"calc = AugkdCalculator({str(path)!r}, device='cpu', threads=1)\n"
        "rows = []\n"
        f"for atoms in read({str(structures)!r}, index=':'):\n"
        "    atoms.calc = calc\n"
        "    rows.append({'energy': atoms.get_potential_energy(), "
        "'forces': atoms.get_forces(apply_constraint=False).tolist()})\n"
        "print(json.dumps(rows))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def checkpoint_predictions(checkpoint: Path, atoms_list) -> list[tuple[float, np.ndarray]]:
    """The checkpoint's own predictions (``AtomisticModel.forward`` on fairchem's graph, plus the element
    references of its prediction origin when it was trained with them), energy and forces."""
    from augkd.element_refs import ElementReferences
    from augkd.models.checkpoint import load_model
    from augkd.models.data import atoms_to_batch

    model, extra = load_model(checkpoint)
    references = ElementReferences.from_extra(extra["element_refs"]) if extra.get("element_refs") else None
    outputs = []
    for atoms in atoms_list:
        with torch.no_grad():
            output = model(atoms_to_batch([atoms]))
        energy = float(output.energy[0].detach())
        if references is not None:
            energy = references.predicted(energy, atoms.numbers)
        outputs.append((energy, output.forces.detach().numpy().astype(np.float64)))
    return outputs
