"""Using a student from the command line: ``augkd relax`` (a student and a teacher relax a slab to fmax through ASE's
optimizers; exit status 1 when fmax is not reached), ``augkd md`` (trajectory and log, exit status 3 on an unstable
run, warnings and one-line errors for bad input) and ``augkd export`` (bad files give one-line errors)."""

import csv
import json

import numpy as np
import pytest
import torch
from ase.io import read, write

from augkd.calculator import AugkdCalculator
from augkd.cli import main
from augkd.errors import AugkdError
from augkd.models import build_model
from augkd.models.checkpoint import load_model, save_model
from student.student_helpers import exported, slab, trained_run


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``augkd ARGV`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return exported(tmp_path_factory)


@pytest.fixture
def structure(tmp_path):
    path = tmp_path / "slab.traj"
    write(path, slab((3, 3, 3), seed=7))
    return path


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


def test_md_cli_writes_trajectory_and_log(student, structure, tmp_path, capsys):
    out = tmp_path / "md.traj"
    status, stdout, _ = run_cli(["md", structure, "--model", student, "--ensemble", "nvt", "--temperature", "500",
                                 "--timestep", "2", "--steps", "20", "--interval", "5", "--out", out, "--quiet",
                                 "--threads", "1", "--thermostat", "bussi"], capsys)
    assert status == 0, stdout
    assert '"stable": true' in stdout and '"steps": 20' in stdout
    frames = read(out, index=":")
    assert len(frames) == 5  # steps 0, 5, 10, 15, 20
    with open(out.with_suffix(".csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [0, 5, 10, 15, 20]
    assert float(rows[-1]["time_ps"]) == pytest.approx(0.04)
    assert all(float(r["temperature_K"]) > 0 for r in rows)


def test_md_stops_cleanly_when_the_model_explodes(tmp_path_factory, structure, tmp_path, capsys):
    """Weights scaled up (the energy scale × 10⁴): forces pass 50 eV/Å; the run stops with one line and exit 3."""
    model, extra = load_model(trained_run(tmp_path_factory) / "checkpoints" / "final.pt")
    with torch.no_grad():
        model.energy_scale.mul_(1e4)
    broken = save_model(tmp_path / "broken.pt", model, extra)
    status, stdout, err = run_cli(["md", structure, "--model", broken, "--steps", "50", "--out",
                                   tmp_path / "md.traj", "--quiet", "--threads", "1"], capsys)
    assert status == 3
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("augkd: md stopped: unstable at step ")
    assert "eV/Å > 50 eV/Å" in lines[0] and "(t = " in lines[0] and "of 0.0500 ps)" in lines[0]
    assert '"stable": false' in stdout


def test_nve_with_a_direct_force_student_warns(tmp_path_factory, structure, tmp_path, capsys):
    student = exported(tmp_path_factory, direct_forces=True)
    status, _, err = run_cli(["md", structure, "--model", student, "--ensemble", "nve", "--steps", "2",
                              "--out", tmp_path / "md.traj", "--quiet", "--threads", "1"], capsys)
    assert status == 0
    assert "augkd: warning: painn-tiny" in err and "its energy is not conserved in NVE" in err


def test_teacher_spec_runs_md(structure, tmp_path, capsys):
    status, stdout, _ = run_cli(["md", structure, "--model", "emt", "--steps", "5", "--out", tmp_path / "md.traj",
                                 "--quiet"], capsys)
    assert status == 0 and '"stable": true' in stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--timestep", "0"], "--timestep 0.0 fs: must be > 0 and ≤ 10 fs"),
        (["--timestep", "12"], "--timestep 12.0 fs: must be > 0 and ≤ 10 fs"),
        (["--temperature", "-1"], "--temperature -1.0 K: must be ≥ 0"),
        (["--ensemble", "npt"], "--ensemble npt: choose nve or nvt"),
    ],
)
def test_bad_md_settings_are_one_line_errors(flags, message, structure, tmp_path, capsys):
    status, _, err = run_cli(["md", structure, "--model", "emt", "--out", tmp_path / "md.traj", *flags], capsys)
    assert status == 2 and err == f"augkd: error: {message}\n"


def test_bad_inputs_are_one_line_errors(structure, tmp_path, capsys):
    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("this is not\nan xyz file\n")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    cases = [
        (["md", tmp_path / "missing.traj", "--model", "emt"], f"no structure file at {tmp_path / 'missing.traj'}"),
        (["md", garbage, "--model", "emt"], f"{garbage}: ASE cannot read a structure from it"),
        (["md", structure, "--model", tmp_path / "nothing.pt"], f"--model {tmp_path / 'nothing.pt'}: no such file"),
        (["md", structure, "--model", foreign], f"{foreign} is not an augkd student or checkpoint"),
        (["relax", structure, "--model", "emt", "--fmax", "0"], "--fmax 0.0 eV/Å: must be > 0"),
    ]
    for argv, message in cases:
        status, _, err = run_cli([*argv, "--out", tmp_path / "out.traj"], capsys)
        assert status == 2 and err.count("\n") == 1, err
        assert err.startswith(f"augkd: error: {message}"), err


def test_unseen_elements_are_an_error_unless_allowed(tmp_path, capsys):
    from augkd.models import build_model

    torch.manual_seed(0)
    student = save_model(tmp_path / "cu.pt", build_model("schnet-tiny"), {"species": [8, 29]})
    structure = tmp_path / "pt.traj"
    atoms = slab((2, 2, 3), seed=1)
    atoms.symbols[0] = "Pt"
    write(structure, atoms)
    argv = ["md", structure, "--model", student, "--steps", "2", "--out", tmp_path / "md.traj", "--quiet"]
    status, _, err = run_cli(argv, capsys)
    assert status == 2
    assert err == f"augkd: error: schnet-tiny ({student}) was not trained on Pt (pass --allow-unseen to run anyway)\n"
    status, _, err = run_cli([*argv, "--allow-unseen"], capsys)
    assert status == 0 and err == f"augkd: warning: schnet-tiny ({student}) was not trained on Pt\n"
    np.testing.assert_equal(read(tmp_path / "md.traj").numbers, atoms.numbers)


def test_non_finite_weights_are_refused_with_the_tensor_named(tmp_path, capsys):
    model = build_model("schnet-tiny")
    with torch.no_grad():
        model.interactions[1].update[0].weight[0, 0] = float("nan")
    path = save_model(tmp_path / "nan.pt", model)
    status, _, err = run_cli(["export", path, "--out", tmp_path / "student.pt"], capsys)
    assert status == 2
    assert err.strip() == (f"augkd: error: {path}: weight tensor interactions.1.update.0.weight holds NaN or inf "
                           "values; refusing this student")
    with pytest.raises(AugkdError, match="interactions.1.update.0.weight"):
        AugkdCalculator(path)
    assert not (tmp_path / "student.pt").exists()


@pytest.mark.parametrize("kind", ["missing", "text", "foreign-dict", "empty-run"])
def test_bad_student_files_give_one_line_errors(kind, tmp_path, capsys):
    path = tmp_path / "model.pt"
    if kind == "text":
        path.write_text("not a checkpoint")
    elif kind == "foreign-dict":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "empty-run":
        path = tmp_path / "run"
        path.mkdir()
    status, _, err = run_cli(["export", path, "--out", tmp_path / "student.pt"], capsys)
    assert status == 2 and err.count("\n") == 1 and err.startswith("augkd: error: ")
    assert str(path) in err
