"""MD with a student: NVE energy conservation of a conservative student, a stop when atoms collapse (``augkd md`` on the
command line: tests/cli/test_student_cli.py)."""

import pytest

from augkd.calculator import AugkdCalculator
from augkd.student.md import MDSettings, run_md
from student.student_helpers import exported, slab


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return exported(tmp_path_factory)


def test_nve_energy_drift_of_a_conservative_student_is_small(student):
    atoms = slab((3, 3, 3), seed=8)
    calc = AugkdCalculator(student, device="cpu", threads=1)
    result = run_md(atoms, calc, MDSettings(ensemble="nve", temperature_K=300, timestep_fs=1.0, steps=300, seed=1))
    assert result.stable and result.steps == 300
    print(f"NVE drift {result.drift_mev_per_atom_ps:.4f} meV/atom/ps over 0.3 ps; split {result.time_split_ms}")
    assert abs(result.drift_mev_per_atom_ps) < 1.0
    assert set(result.time_split_ms) == {"neighbors", "model", "rest"}


def test_md_stops_when_atoms_collapse(tmp_path):
    from ase.calculators.lj import LennardJones

    atoms = slab((2, 2, 3), seed=0)
    atoms.positions[-1] = atoms.positions[-2] + [0.0, 0.0, 0.45]  # the adsorbate on top of a surface atom
    calc = LennardJones(sigma=0.1, epsilon=1e-6, rc=3.0)  # barely any force: nothing pushes them apart
    result = run_md(atoms, calc, MDSettings(ensemble="nve", steps=10))
    assert not result.stable and result.steps == 0 and result.reason.startswith("min interatomic distance 0.")


