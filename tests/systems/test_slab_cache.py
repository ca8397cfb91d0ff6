"""The slab cache may live in a shared directory: a planted pickle must run nothing."""

from __future__ import annotations

import os
import pickle

from augkd.systems.bulks import bulk_fingerprint
from augkd.systems.sampler import SamplerConfig, SystemSampler


class _Payload:
    """Unpickling this object runs a shell command (what an attacker would plant)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickle_in_the_slab_cache_runs_nothing(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("AUGKD_SLAB_CACHE", str(cache))
    config = SamplerConfig(elements=("Cu", "O", "H"), max_miller=1, max_atoms=60)
    honest = SystemSampler(config)
    bulk = next(b for b in honest.bulks if b.name.startswith("Cu") or "Cu" in b.atoms.get_chemical_symbols())
    slabs = honest.slabs(bulk)
    path = honest._cache_dir / f"{bulk_fingerprint(bulk.atoms)}.pkl"
    from augkd.safe_pickle import restricted_load

    with open(path, "rb") as handle:  # the honest cache loads through the restricted loader
        assert len(restricted_load(handle)) == len(slabs)
    assert len(SystemSampler(config).slabs(bulk)) == len(slabs)
    marker = tmp_path / "pwned"
    path.write_bytes(pickle.dumps([_Payload(marker)]))
    again = SystemSampler(config).slabs(bulk)
    assert not marker.exists(), "the planted pickle ran code"
    assert len(again) == len(slabs)  # enumerated again
    assert pickle.loads(path.read_bytes())  # and the cache file rewritten with honest slabs
