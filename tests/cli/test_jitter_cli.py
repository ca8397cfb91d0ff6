"""`augkd jitter` on the command line: bad input is one line on stderr and writes nothing; an adversarial run driven
through the command line, killed, resumes with --resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from augkd.cli import main
from augkd.io.dataset import load_manifest
from generators.jitter_helpers import jitter_args, jitter_job, rows_by_copy, tiny_student


@pytest.fixture
def source(small_d1m):
    return small_d1m(frames__fraction=0.2, shards=3)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return tiny_student(tmp_path_factory.mktemp("student") / "student.pt")


@pytest.mark.parametrize("mode, copies", [("rattle", 2), ("adversarial", 1)])
def test_jitter_flags_build_the_job_of_the_stage_tests(source, student, tmp_path, mode, copies):
    """tests/distributed/test_jitter_job.py builds `augkd jitter`'s jobs without the command line."""
    from augkd.cli import JOBS, build_parser

    extra = ["--student", str(student)] if mode == "adversarial" else []
    args = build_parser().parse_args(jitter_args(source, tmp_path / "out", *extra, mode=mode, copies=copies))
    job, _ = JOBS["jitter"][1](args)
    assert job == jitter_job(source, mode=mode, copies=copies, student=student if extra else None)


def test_adversarial_through_the_cli_and_killed_run_resumes(source, student, tmp_path):
    reference = tmp_path / "reference"
    args = jitter_args(source, reference, "--student", str(student), mode="adversarial", copies=1)
    assert main(args) == 0
    rows = rows_by_copy(reference)
    assert {row.data["origin"] for row in rows.values()} == {"adversarial"}
    assert load_manifest(reference)["student"]["sha256"]

    out = tmp_path / "killed"
    args = jitter_args(source, out, "--student", str(student), mode="adversarial", copies=1)
    command = [sys.executable, "-c", "import sys; from augkd.cli import main; sys.exit(main(sys.argv[1:]))", *args]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "index").glob("*.json")):
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists()
    assert main([*args, "--resume"]) == 0
    # Every row exactly once. Values to float32 rounding only: the attack's backward pass (scatter-adds) sums in
    # an order that depends on the torch thread count, which differs between that process and this one.
    resumed = rows_by_copy(out)
    assert sorted(resumed) == sorted(rows)
    for key, row in rows.items():
        np.testing.assert_allclose(resumed[key].atoms.positions, row.atoms.positions, atol=1e-6)
        assert resumed[key].energy == pytest.approx(row.energy, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("extra, mode, message", [
    (("--norm", "0"), "rattle", "norm"),
    (("--norm", "1.5"), "rattle", "1.5"),
    ((), "adversarial", "--student"),
    ((), "sideways", "sideways"),
    (("--student", "nothere.pt"), "adversarial", "nothere.pt"),
])
def test_bad_input_is_one_line_and_writes_nothing(source, tmp_path, capsys, extra, mode, message):
    out = tmp_path / "bad"
    assert main([*jitter_args(source, out, mode=mode), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("augkd: error:") and "\n" not in err and message in err
    assert not out.exists()
