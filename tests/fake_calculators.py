"""ASE calculators that misbehave on purpose, loaded as teachers via ``ase:fake_calculators.<Class>``."""

import numpy as np
from ase.calculators.emt import EMT


class NaNAfterEMT(EMT):
    """EMT that returns NaN energies and forces from its ``nan_after``-th call on."""

    def __init__(self, nan_after=3, **kwargs):
        super().__init__(**kwargs)
        self.nan_after = nan_after
        self.calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        if self.calls > self.nan_after:
            self.results["energy"] = float("nan")
            self.results["forces"] = np.full_like(self.results["forces"], np.nan)


class FailingEMT(EMT):
    """EMT that raises on every call."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        raise RuntimeError("teacher crashed on purpose")


class ThreadCountEMT(EMT):
    """EMT whose energy is the number of torch threads of the process that computes it (tests of --threads)."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        import torch

        super().calculate(atoms, properties, system_changes)
        self.results["energy"] = float(torch.get_num_threads())
