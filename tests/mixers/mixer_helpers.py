"""Small EMT-labelled datasets of a chosen origin, written in a second (no relaxation: rattled Cu(111)+O slabs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from augkd.io.dataset import DatasetWriter
from augkd.records import LabelledFrame, plain_atoms
from conftest import cu_adslab


def emt_frames(rows: int, origin: str | None, seed: int) -> list[LabelledFrame]:
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    frames = []
    for number in range(rows):
        atoms = cu_adslab(rng)
        atoms.calc = EMT()
        data = {"sid": f"{origin}-{seed}-{number}", "fid": 0}
        if origin is not None:
            data["origin"] = origin
        frames.append(LabelledFrame(plain_atoms(atoms), float(atoms.get_potential_energy()),
                                    atoms.get_forces(apply_constraint=False).copy(), data))
    return frames


def write_dataset(path: Path, frames: list[LabelledFrame], origin: str | None, shards: int = 1) -> Path:
    """An augkd dataset directory; ``origin=None`` leaves it out of the manifest."""
    plan = {"kind": "test", "shard_count": shards}
    if origin is not None:
        plan["origin"] = origin
    writer = DatasetWriter(path, plan)
    writer.open()
    for index in range(shards):
        writer.write_shard(index, frames[index::shards], {})
    writer.finalize(shards, {})
    return path


def emt_dataset(path: Path, rows: int, origin: str | None, seed: int = 0) -> Path:
    return write_dataset(path, emt_frames(rows, origin, seed), origin)


def source_datasets(root: Path) -> dict[str, Path]:
    """The mixture-source test sets: two dft sets, synthetic, rattle, one without an origin, one empty."""
    return {
        "dft": emt_dataset(root / "dft", 6, "dft", seed=1),
        "dft2": emt_dataset(root / "dft2", 2, "dft", seed=2),
        "syn": emt_dataset(root / "syn", 3, "synthetic", seed=3),
        "rattle": emt_dataset(root / "rattle", 4, "rattle", seed=4),
        "anonymous": write_dataset(root / "anonymous", emt_frames(2, None, 5), None),
        "empty": write_dataset(root / "empty", [], "dft"),
    }
