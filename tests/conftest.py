import os
import sys
from pathlib import Path

import pytest

# fairchem's warp backend prints a CUDA warning on machines without a GPU; augkd hides it the same way.
sys.modules.setdefault("nvalchemiops", None)
sys.path.insert(0, str(Path(__file__).parent))  # for `ase:fake_calculators.<Class>` teachers


@pytest.fixture(scope="session", autouse=True)
def slab_cache(tmp_path_factory):
    """One slab-enumeration cache for the whole session, never the user's."""
    path = tmp_path_factory.mktemp("slab-cache")
    os.environ["AUGKD_SLAB_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def slurm():
    """A running single-node SLURM (scripts/slurm-dev.sh); stopped afterwards only if this fixture started it."""
    import shutil
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "slurm-dev.sh"
    if os.geteuid() != 0:
        pytest.skip("SLURM tests need root to install slurm-wlm/munge and start the daemons (scripts/slurm-dev.sh)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM tests need slurm-wlm installed or apt-get to install it")
    already = subprocess.run([str(script), "status"], capture_output=True).returncode == 0
    if not already:
        done = subprocess.run([str(script), "start"], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"scripts/slurm-dev.sh start failed:\n{done.stdout}\n{done.stderr}"
    yield
    if not already:
        subprocess.run([str(script), "stop"], capture_output=True, timeout=120)


@pytest.fixture
def one_thread():
    """One torch thread: bitwise comparisons need deterministic kernels (multi-threaded CPU scatter-adds sum in
    varying order), and on a shared 2-core machine it is also the fast setting."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_generate_args(out, *extra, systems=6, shards=2, teacher="emt"):
    """A fast, deterministic d1M recipe for tests: EMT, Cu/Pt only, (100)/(110)/(111) slabs, short relaxations."""
    return [
        "generate", "d1M", "--out", str(out), "--systems", str(systems), "--shards", str(shards),
        "--teacher", teacher, "--elements", "Cu,Pt,O,H,C,N", "--max-atoms", "60", "--steps", "25",
        "--fmax", "0.1", "--frames-fraction", "0.5", "--keep-final", "--seed", "7", "--quiet",
        "systems_sampler.max_miller=1",
        "filters.drop_anomalies=[desorbed,intercalated]",
        *extra,
    ]


#: small_generate_args without its command line: the same settings as dotted config keys (``__`` for ``.``)
SMALL_GENERATE = {
    "seed": 7, "systems_sampler__elements": ["Cu", "Pt", "O", "H", "C", "N"], "systems_sampler__max_atoms": 60,
    "relax__steps": 25, "relax__fmax": 0.1, "frames__fraction": 0.5, "frames__keep_final": True,
}
SMALL_GENERATE_OVERRIDES = ("systems_sampler.max_miller=1", "filters.drop_anomalies=[desorbed,intercalated]")


def dotted(settings):
    """``{"relax__fmax": 0.1}`` → ``{"relax.fmax": 0.1}``: config keys written as Python keyword arguments."""
    return {key.replace("__", "."): value for key, value in settings.items()}


def generate_config(kind, overrides=(), **settings):
    """``augkd generate KIND``'s config without its command line: the recipe's yaml, hydra-style overrides, then
    ``settings`` by dotted key (they win over the overrides, as flags do)."""
    from augkd.config import apply_flags, compose
    from augkd.generators.d1m import GenerateConfig

    values = apply_flags(compose("generate", kind, list(overrides)), dotted(settings))
    values.pop("workers", None)  # how the job runs, not what it makes
    return GenerateConfig.from_dict(values)


def small_generate_job(*overrides, systems=6, shards=2, teacher="emt", **settings):
    """The job of ``small_generate_args`` (tests/cli checks that both build the same job), for tests of the stage."""
    from augkd.distributed.jobs import GenerateJob

    settings = {**SMALL_GENERATE, "systems": systems, "shards": shards, "teacher": teacher, **settings}
    return GenerateJob(generate_config("d1M", [*SMALL_GENERATE_OVERRIDES, *overrides], **settings))


def run_job(job, out, **request):
    """Run a shard job into ``out`` as ``augkd <job> --out OUT --quiet`` does; ``request``: ``ExecutionRequest``'s
    fields (executor, workers, shard_index, resume, threads, ...). Returns what ``execute`` returns."""
    from augkd.distributed.executors import ExecutionRequest, execute

    return execute(job, out, ExecutionRequest(**{"progress": False, **request}))


@pytest.fixture(scope="session")
def small_d1m(tmp_path_factory):
    """``small_d1m(**job)``: the dataset of ``small_generate_job(**job)``, made once per session and shared by every
    module that asks for the same one (read it, never write into it)."""
    made = {}

    def dataset(*overrides, **job):
        key = repr((overrides, sorted(job.items())))
        if key not in made:
            out = tmp_path_factory.mktemp("small-d1m") / "d1M"
            run_job(small_generate_job(*overrides, **job), out)
            made[key] = out
        return made[key]

    return dataset


def train_config(*overrides, **settings):
    """``augkd train``'s config without its command line: configs/train/default.yaml, hydra-style overrides, then
    ``settings`` by dotted key (``data__train=[...]``, ``model__name="painn-tiny"``), as the flags apply."""
    from augkd.config import apply_flags, compose_over_default
    from augkd.train.config import TrainConfig

    values = compose_over_default("train", "default", list(overrides))
    return TrainConfig.from_dict(apply_flags(values, dotted(settings)))


def train_run(out, *overrides, **settings):
    """Train a student into the run directory ``out`` (``Trainer.fit`` of ``train_config``); returns fit's result."""
    from augkd.train.trainer import Trainer

    return Trainer(train_config(*overrides, **settings), out).fit(progress=False)


def cu_adslab(rng):
    """A small OC20-style Cu(111) slab with an O adsorbate: tags 0/1/2, FixAtoms on tag 0, pbc (T, T, F), rattled."""
    import numpy as np
    from ase.build import add_adsorbate, fcc111
    from ase.constraints import FixAtoms

    atoms = fcc111("Cu", size=(2, 2, 3), vacuum=10.0)
    atoms.set_tags(np.where(atoms.positions[:, 2] > atoms.positions[:, 2].min() + 0.1, 1, 0))
    add_adsorbate(atoms, "O", height=1.2, position="fcc")  # add_adsorbate tags the adsorbate 0; OC20 uses 2
    tags = atoms.get_tags()
    tags[-1] = 2
    atoms.set_tags(tags)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    atoms.set_constraint(FixAtoms(indices=np.flatnonzero(tags == 0)))
    return atoms
