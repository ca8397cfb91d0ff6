"""Sample OC20-style adsorbate–slab systems offline with fairchem-data-oc.

System ``i`` depends only on (master seed, i): its bulk, slab, adsorbate and placement are drawn from a generator
seeded with ``system_seed(master_seed, i)``, so any split of the work produces the same systems.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Collection

import numpy as np
from ase import Atoms

from augkd._fairchem import quiet_fairchem
from augkd.errors import ConfigError
from augkd.records import plain_atoms
from augkd.safe_pickle import restricted_load
from augkd.systems.bulks import BulkEntry, builtin_bulks, bulk_fingerprint, filter_bulks, load_bulks

PLACEMENTS = ("random", "heuristic", "random_site_heuristic_placement")
_MAX_DRAWS = 200  # redraws allowed for one system before max_atoms is declared unsatisfiable


@dataclass(frozen=True)
class SamplerConfig:
    bulks: str = "builtin"  # "builtin" or a bulk file/folder
    elements: tuple[str, ...] | None = None  # element allow-list
    max_miller: int = 2
    max_atoms: int = 120
    placement: str = "random_site_heuristic_placement"

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"placement '{self.placement}' is not one of {PLACEMENTS}")
        if not 1 <= self.max_miller <= 3:
            raise ConfigError(f"max_miller={self.max_miller} must be 1, 2 or 3")
        if self.max_atoms < 2:
            raise ConfigError(f"max_atoms={self.max_atoms} must be at least 2")


@dataclass
class SampledSystem:
    index: int
    seed: int
    atoms: Atoms  # the adslab: tags 0/1/2, FixAtoms on tag 0, pbc (T, T, F)
    slab: Atoms  # the clean slab the adsorbate sits on
    slab_key: str  # identifies the slab (bulk fingerprint, millers, shift, top)
    bulk: str
    millers: tuple[int, int, int]
    adsorbate: str  # SMILES of the adsorbate, as in adsorbates.pkl


def system_seed(master_seed: int, index: int) -> int:
    """A 32-bit seed for system ``index``; independent of shard layout and worker order."""
    return int(np.random.SeedSequence([int(master_seed), int(index)]).generate_state(1)[0])


def _load_adsorbates() -> dict[int, tuple]:
    quiet_fairchem()
    from fairchem.data.oc.databases.pkls import ADSORBATE_PKL_PATH

    with open(ADSORBATE_PKL_PATH, "rb") as handle:
        return restricted_load(handle)


class SystemSampler:
    def __init__(self, config: SamplerConfig, allowed_elements: Collection[str] | None = None):
        """``allowed_elements`` (e.g. what the teacher supports) narrows ``config.elements`` further."""
        self.config = config
        allowed = set(config.elements) if config.elements else None
        if allowed_elements is not None:
            allowed = set(allowed_elements) if allowed is None else allowed & set(allowed_elements)
        source = builtin_bulks() if config.bulks == "builtin" else load_bulks(config.bulks)
        self.bulks: list[BulkEntry] = filter_bulks(source, allowed)
        if not self.bulks:
            raise ConfigError(f"element filter {sorted(allowed or [])} leaves no bulk in '{config.bulks}'")
        adsorbates = _load_adsorbates()
        self.adsorbates = {
            key: value
            for key, value in sorted(adsorbates.items())
            if allowed is None or set(value[0].get_chemical_symbols()) <= allowed
        }
        if not self.adsorbates:
            raise ConfigError(f"element filter {sorted(allowed or [])} leaves no adsorbate")
        self._adsorbate_ids = list(self.adsorbates)
        self._slabs: dict[str, list] = {}
        # Where the cache lives changes no result, so it is an environment setting rather than part of the config.
        cache = os.environ.get("AUGKD_SLAB_CACHE") or os.path.join(Path.home(), ".cache", "augkd", "slabs")
        self._cache_dir = Path(cache) / f"max_miller{config.max_miller}"

    def sample(self, master_seed: int, index: int) -> SampledSystem:
        from fairchem.data.oc.core import Adsorbate, AdsorbateSlabConfig

        seed = system_seed(master_seed, index)
        rng = np.random.default_rng(seed)
        for _ in range(_MAX_DRAWS):
            bulk = self.bulks[rng.integers(len(self.bulks))]
            slabs = self.slabs(bulk)
            slab = slabs[rng.integers(len(slabs))]
            adsorbate_id = self._adsorbate_ids[rng.integers(len(self._adsorbate_ids))]
            ads_atoms, smiles, binding, *_ = self.adsorbates[adsorbate_id]
            if len(slab.atoms) + len(ads_atoms) > self.config.max_atoms:
                continue
            adsorbate = Adsorbate(adsorbate_atoms=ads_atoms, adsorbate_binding_indices=list(binding))
            adsorbate.smiles = smiles
            # fairchem-data-oc draws sites and rotations from numpy's global generator: seed it per system and
            # put the caller's state back afterwards.
            saved = np.random.get_state()
            np.random.seed(seed)
            try:
                placed = AdsorbateSlabConfig(
                    slab, adsorbate, num_sites=1, num_augmentations_per_site=1, mode=self.config.placement
                )
            finally:
                np.random.set_state(saved)
            if not placed.atoms_list:
                continue
            return SampledSystem(
                index=index,
                seed=seed,
                atoms=plain_atoms(placed.atoms_list[0]),
                slab=plain_atoms(slab.atoms),
                slab_key=f"{bulk_fingerprint(bulk.atoms)[:16]}:{tuple(slab.millers)}:{slab.shift:.4f}:{slab.top}",
                bulk=bulk.name,
                millers=tuple(int(m) for m in slab.millers),
                adsorbate=str(smiles),
            )
        raise ConfigError(
            f"max_atoms={self.config.max_atoms} leaves no adsorbate–slab system "
            f"(system {index}: {_MAX_DRAWS} draws were all too large)"
        )

    def slabs(self, bulk: BulkEntry) -> list:
        """All slabs of ``bulk`` up to max_miller, enumerated once and cached in memory and on disk."""
        key = bulk_fingerprint(bulk.atoms)
        if key not in self._slabs:
            self._slabs[key] = self._enumerate_slabs(bulk, key)
        return self._slabs[key]

    def _enumerate_slabs(self, bulk: BulkEntry, key: str) -> list:
        quiet_fairchem()
        from fairchem.data.oc.core import Bulk, Slab

        fairchem_bulk = Bulk(bulk_atoms=bulk.atoms)
        fairchem_bulk.set_source_dataset_id(bulk.name)
        path = self._cache_dir / f"{key}.pkl"
        if path.exists():
            try:
                # the cache directory may be shared (a group folder on a cluster): whoever can write there must not
                # run code in this job, so only allowlisted classes (ASE atoms, numpy arrays) are rebuilt
                with open(path, "rb") as handle:
                    parts = restricted_load(handle)
                return [Slab(fairchem_bulk, atoms, millers, shift, top, _bulk_from_plain(oriented))
                        for atoms, millers, shift, top, oriented in parts]
            except Exception:  # a stale, foreign or planted cache file: enumerate again
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
        slabs = Slab.from_bulk_get_all_slabs(fairchem_bulk, max_miller=self.config.max_miller)
        if not slabs:
            raise ConfigError(f"bulk '{bulk.name}' yields no slab with Miller index ≤ {self.config.max_miller}")
        # plain ASE atoms (fairchem hands out pymatgen's MSONAtoms), so that the restricted loader can read them back
        parts = [(_plain_ase(s.atoms), s.millers, s.shift, s.top, _plain_bulk(s.oriented_bulk)) for s in slabs]
        try:
            self._cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as handle:
                pickle.dump(parts, handle)
            os.replace(tmp, path)  # concurrent workers may race here; either complete file wins
        except OSError:
            pass  # an unwritable cache only costs time
        return slabs


def _plain_ase(atoms):
    from ase import Atoms

    plain = Atoms(atoms)  # the base class, with arrays, cell, pbc, constraints and info
    plain.info = {k: v for k, v in plain.info.items() if isinstance(v, (str, int, float, bool))}
    return plain


def _plain_bulk(structure):
    """fairchem's oriented bulk (a pymatgen Structure) as plain values: its ``as_dict``."""
    from pymatgen.core import Structure

    return {"pymatgen_structure": structure.as_dict()} if isinstance(structure, Structure) else _plain_ase(structure)


def _bulk_from_plain(value):
    if isinstance(value, dict):
        from pymatgen.core import Structure

        return Structure.from_dict(value["pymatgen_structure"])  # builds a lattice and sites, imports nothing named
    return value
