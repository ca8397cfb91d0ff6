"""``augkd relax``: a student and a teacher relax a slab to fmax through ASE's optimizers."""

import json

import numpy as np
from ase.io import read, write

from augkd.calculator import AugkdCalculator
from student_helpers import exported, run_cli, slab


def test_student_relax_reaches_fmax(tmp_path_factory, tmp_path, capsys):
    """FIRE on a 20-step student's rough landscape (BFGS, which trusts a quadratic model, relaxes the teacher below)."""
    student = exported(tmp_path_factory)
    atoms = slab((3, 3, 3), seed=9)
    atoms.positions[-1] += [0.3, -0.2, 0.4]  # the adsorbate off its site
    atoms.calc = AugkdCalculator(student, device="cpu", threads=1)
    start = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
    target = start / 10  # the tiny student's forces are small; ask for a tenth of the initial ones
    structure = tmp_path / "start.traj"
    write(structure, atoms)
    out = tmp_path / "relax.traj"
    status, stdout, _ = run_cli(["relax", structure, "--model", student, "--fmax", target, "--steps", 300,
                                 "--optimizer", "FIRE", "--out", out, "--quiet", "--threads", 1], capsys)
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert status == 0 and summary["converged"] and 0 < summary["steps"] <= 300
    final = read(out)  # the last frame is the relaxed structure; fixed atoms did not move
    assert summary["fmax_eV_per_A"] <= target
    np.testing.assert_allclose(final.positions[:9], atoms.positions[:9])


def test_teacher_relax_and_the_not_converged_exit(tmp_path, capsys):
    structure = tmp_path / "start.traj"
    write(structure, slab((2, 2, 3), seed=1))
    status, stdout, _ = run_cli(["relax", structure, "--model", "emt", "--fmax", "0.05", "--out",
                                 tmp_path / "emt.traj", "--quiet"], capsys)
    assert status == 0 and json.loads(stdout)["converged"]
    status, stdout, err = run_cli(["relax", structure, "--model", "emt", "--fmax", "0.001", "--steps", "2",
                                   "--out", tmp_path / "short.traj", "--quiet"], capsys)
    assert status == 1 and not json.loads(stdout)["converged"]
    assert err.startswith("augkd: relax: fmax ") and err.strip().endswith("> 0.001 after 2 steps")
