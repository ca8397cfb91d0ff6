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
