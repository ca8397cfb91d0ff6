"""`augkd generate` and the execution flags of every shard job: flags build the job the stage tests build, bad input
and bad flags are one line on stderr with exit status 2 and write nothing."""

import pytest
import torch

from augkd.cli import JOBS, build_parser, main
from conftest import small_generate_args, small_generate_job
from generators.torch_potentials import painn_checkpoint_file


@pytest.fixture
def reference(small_d1m):
    return small_d1m()


@pytest.fixture(scope="module")
def painn_checkpoint(tmp_path_factory):
    return painn_checkpoint_file(tmp_path_factory.mktemp("ckpt") / "painn-tiny.pt")


@pytest.mark.parametrize("extra, size, settings", [
    ((), {}, {}),
    (("--frames-fraction", "0.2"), {"shards": 3}, {"frames__fraction": 0.2}),
    (("--teacher-kwargs", '{"nan_after": 12}', "origin=dft"),
     {"systems": 2, "shards": 1, "teacher": "ase:fake_calculators.NaNAfterEMT"},
     {"teacher_kwargs": {"nan_after": 12}, "origin": "dft"}),
])
def test_small_generate_args_build_the_job_of_small_generate_job(tmp_path, extra, size, settings):
    """The stage tests build their jobs without the command line; the flags they stand for build the same job."""
    args, rest = build_parser().parse_known_args(small_generate_args(tmp_path / "out", *extra, **size))
    args.overrides = list(args.overrides) + rest
    job, workers = JOBS["generate"][1](args)
    assert job == small_generate_job(**size, **settings) and workers == 1


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--systems": "0"}, "--systems 0"),
        ({"--frames-fraction": "0"}, "fraction 0"),
        ({"--frames-fraction": "1.5"}, "fraction 1.5"),
        ({"--teacher": "nosuchteacher"}, "unknown teacher 'nosuchteacher'"),
        ({"--teacher": "ase:nosuchmodule.Calc"}, "nosuchmodule"),
        ({"--elements": "Xe,Kr"}, "leaves no bulk"),
        ({"--elements": "Cu"}, "leaves no adsorbate"),
        ({"--bulks": "/nonexistent/bulks.pkl"}, "/nonexistent/bulks.pkl"),
        ({"--optimizer": "NoSuchOptimizer"}, "NoSuchOptimizer"),
        ({"--shards": "99"}, "--shards 99"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, change, message):
    out = tmp_path / "out"
    args = small_generate_args(out)
    for flag, value in change.items():
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("augkd: error:") and "\n" not in err and message in err
    assert not out.exists()


def test_unreadable_bulk_file_is_refused(tmp_path, capsys):
    bad = tmp_path / "bulks.cif"
    bad.write_text("this is not a crystal\n")
    out = tmp_path / "out"
    args = small_generate_args(out, "--bulks", str(bad))
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert str(bad) in err and "\n" not in err
    assert not out.exists()


def test_foreign_or_file_out_is_refused(tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    assert main(small_generate_args(foreign)) == 2
    assert "not an augkd dataset" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]
    file_out = tmp_path / "file"
    file_out.write_text("x")
    assert main(small_generate_args(file_out)) == 2
    assert "not a directory" in capsys.readouterr().err


def test_resume_with_another_plan_is_refused(reference, capsys):
    assert main(small_generate_args(reference, "--fmax", "0.2")) == 2
    err = capsys.readouterr().err
    assert "another plan" in err and "fmax" in err


def test_unreachable_scheduler_is_one_line_naming_it(tmp_path, capsys):
    out = tmp_path / "none"
    address = "tcp://127.0.0.1:9"  # discard port: nothing listens
    args = small_generate_args(out, "--executor", "dask", "--scheduler", address)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("augkd: error:") and "\n" not in err and address in err
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--scheduler", "tcp://127.0.0.1:9"], "--scheduler and --cluster need --executor dask"),
        (["--executor", "dask", "--workers", "0"], "--workers 0"),
        (["--shard-index", "2"], "--shard-index 2 is outside 0..1"),
        (["--shard-index", "-1"], "--shard-index -1"),
        (["--resume"], "--resume"),
        (["--device", "tpu"], "--device 'tpu'"),
        pytest.param(["--device", "cuda"], "--device cuda: this process sees no CUDA device",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
        pytest.param(["--device", "cuda", "--workers", "2"], "--device cuda",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    ],
)
def test_bad_execution_flags_are_one_line_errors(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main(small_generate_args(out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("augkd: error:") and "\n" not in err and message in err
    assert not out.exists()


def test_generate_refuses_impossible_relaxer_requests(tmp_path, capsys, painn_checkpoint):
    from conftest import small_generate_args

    from augkd.cli import main

    cases = [
        (small_generate_args(tmp_path / "a", "--relaxer", "batched"), "needs a torch teacher"),
        (small_generate_args(tmp_path / "b", "--relaxer", "batched", "--optimizer", "BFGS", teacher=f"ckpt:{painn_checkpoint}"), "FIRE only"),
        (small_generate_args(tmp_path / "c", "frames.features=[node]"), "cannot cache ['node']"),
        (small_generate_args(tmp_path / "d", "--batch-atoms", "lots", teacher=f"ckpt:{painn_checkpoint}"), "--batch-atoms 'lots'"),
    ]
    for args, message in cases:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("augkd: error:") and "\n" not in err and message in err
        assert not (tmp_path / args[args.index("--out") + 1]).exists()
