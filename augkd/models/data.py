"""ASE ``Atoms`` → fairchem ``AtomicData`` batches, the input every augkd model takes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ase import Atoms

from augkd._fairchem import quiet_fairchem


def atoms_to_batch(atoms_list: Sequence[Atoms], dtype: torch.dtype | None = None):
    """One batch of the given structures (positions, cell, pbc, tags, ``fixed`` from FixAtoms); no labels.

    ``dtype``: floating dtype of positions and cell (fairchem gives float32); match it to the model's.
    """
    quiet_fairchem()
    from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch

    dtype = dtype or torch.float32
    # converted from ASE's float64 straight to ``dtype``: a float32 detour would round float64 positions
    return atomicdata_list_to_batch(
        [
            AtomicData.from_ase(atoms, r_energy=False, r_forces=False, r_stress=False, target_dtype=dtype)
            for atoms in atoms_list
        ]
    )


def cast_batch(batch, dtype: torch.dtype):
    """``batch`` with positions and cell in ``dtype``: the batch itself when they already are, else a copy."""
    if batch.pos.dtype == dtype and batch.cell.dtype == dtype:
        return batch
    batch = batch.clone()
    batch.pos = batch.pos.to(dtype)
    batch.cell = batch.cell.to(dtype)
    return batch
