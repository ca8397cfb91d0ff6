"""Helpers shared by the model tests (a module, not a conftest: tests import the top-level conftest by name)."""

import numpy as np
import torch
from ase.build import molecule

from augkd.models import build_model
from augkd.models.data import atoms_to_batch


def run_model(model, atoms_list):
    """Model outputs for a list of ASE structures, batched in the model's dtype."""
    dtype = next(model.parameters()).dtype
    return model(atoms_to_batch(atoms_list, dtype=dtype))


def tiny_model(name: str, dtype=torch.float64, seed: int = 0, **overrides):
    """A tiny model in float64 with a neighbour limit no test system reaches (no truncation ties)."""
    torch.manual_seed(seed)
    variant = {"painn-tiny-grad": ("painn-tiny", {"direct_forces": False})}
    base, extra = variant.get(name, (name, {}))
    model = build_model(base, max_neighbors=1000, **{**extra, **overrides}).to(dtype).eval()
    # a non-trivial normaliser so that its handling is part of every property test
    model.fit_energy_normalizer(-3.2, 1.7)
    return model


def rattled_ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=3)
    return atoms


def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q
