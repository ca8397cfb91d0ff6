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
