"""Throughput of the ``.aselmdb`` shard writer/reader against plain ASE, in one run.

Prints ONE JSON line on stdout: rows/s written and read by ``augkd.io.aselmdb`` and, side by side, by plain ASE
(``db.write(atoms_with_SinglePointCalculator, data=...)`` inside one transaction; ``row.toatoms()`` per row), with
the ratios. Frames are ~60-atom OC20-like rows: a Cu fcc111 (4, 4, 4) slab with an O adsorbate (65 atoms), FixAtoms
on the two bottom layers, tags 0/1/2, random energy and forces, and the provenance ``data`` dict.

Each measurement is the best of ``--repeats`` runs (the machine may be shared; the best run is the least disturbed).

    python bench/io_throughput.py [--rows 2000] [--repeats 3] [--profile write|read]

``--profile`` prints a cProfile of one write or read of ours on stderr (stdout keeps its single JSON line).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from augkd.io.aselmdb import count_aselmdb, read_aselmdb, remove_lmdb, write_aselmdb
from augkd.records import LabelledFrame

WRITE_TARGET = 1000.0  # rows/s
READ_TARGET = 2000.0  # rows/s


def make_frames(n: int, seed: int = 0) -> list[LabelledFrame]:
    from ase.build import add_adsorbate, fcc111
    from ase.constraints import FixAtoms

    rng = np.random.default_rng(seed)
    base = fcc111("Cu", size=(4, 4, 4), vacuum=10.0)
    layer = base.get_tags()  # 1 = top layer ... 4 = bottom layer
    base.set_tags(np.where(layer <= 2, 1, 0))  # OC20 convention: 0 subsurface (fixed), 1 surface, 2 adsorbate
    add_adsorbate(base, "O", height=1.2, position="fcc")
    tags = base.get_tags()
    tags[-1] = 2
    base.set_tags(tags)
    fixed = np.flatnonzero(tags == 0)
    frames = []
    for i in range(n):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.set_constraint(FixAtoms(indices=fixed))
        natoms = len(atoms)
        frames.append(
            LabelledFrame(
                atoms=atoms,
                energy=float(rng.normal(-250.0, 5.0)),
                forces=rng.normal(scale=0.5, size=(natoms, 3)),
                data={
                    "sid": f"bench-{i // 20:05d}",
                    "fid": i % 20,
                    "origin": "synthetic",
                    "teacher": "eqv2-31M",
                    "system_seed": 1_000_000 + i // 20,
                    "relax_step": i % 20,
                    "bulk": "mp-30",
                    "millers": [1, 1, 1],
                    "adsorbate": "*O",
                },
            )
        )
    return frames


def _ase_atoms(frames: list[LabelledFrame]):
    """The same frames as plain ASE would be handed them: atoms with a SinglePointCalculator (built untimed)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for frame in frames:
        atoms = frame.atoms.copy()
        atoms.calc = SinglePointCalculator(atoms, energy=frame.energy, forces=frame.forces)
        out.append((atoms, frame.data))
    return out


def _timed(fn) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ours_write(frames, path: Path) -> None:
    assert write_aselmdb(path, frames) == len(frames)


def ours_read(path: Path, n: int) -> None:
    count = 0
    for frame in read_aselmdb(path):
        count += 1
    assert count == n


def ase_write(atoms_data, path: Path) -> None:
    import ase.db

    db = ase.db.connect(path, type="aselmdb", use_lock_file=False)
    with db:  # one transaction
        for atoms, data in atoms_data:
            db.write(atoms, data=data)


def ase_read(path: Path, n: int) -> None:
    import ase.db

    db = ase.db.connect(path, type="aselmdb", use_lock_file=False, readonly=True)
    count = 0
    for row in db.select():
        atoms = row.toatoms()
        atoms.get_potential_energy()
        atoms.get_forces(apply_constraint=False)
        row.data
        count += 1
    db.close()
    assert count == n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", choices=("write", "read"), default=None)
    args = parser.parse_args(argv)

    frames = make_frames(args.rows)
    atoms_data = _ase_atoms(frames)
    best = {"write": float("inf"), "read": float("inf"), "ase_write": float("inf"), "ase_read": float("inf")}
    sizes = {}
    with tempfile.TemporaryDirectory(prefix="augkd-io-bench-") as tmp:
        tmp = Path(tmp)
        for rep in range(args.repeats):
            ours, theirs = tmp / f"ours-{rep}.aselmdb", tmp / f"ase-{rep}.aselmdb"
            best["write"] = min(best["write"], _timed(lambda: ours_write(frames, ours)))
            best["ase_write"] = min(best["ase_write"], _timed(lambda: ase_write(atoms_data, theirs)))
            best["read"] = min(best["read"], _timed(lambda: ours_read(ours, args.rows)))
            best["ase_read"] = min(best["ase_read"], _timed(lambda: ase_read(theirs, args.rows)))
            assert count_aselmdb(ours) == args.rows
            sizes = {"ours": ours.stat().st_size, "ase": theirs.stat().st_size}
            remove_lmdb(theirs)
            if rep + 1 < args.repeats:
                remove_lmdb(ours)
        if args.profile:
            prof = cProfile.Profile()
            target = tmp / "profile.aselmdb"
            if args.profile == "write":
                prof.runcall(ours_write, frames, target)
            else:
                ours_write(frames, target)
                prof.runcall(ours_read, target, args.rows)
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)

    rate = {key: args.rows / seconds for key, seconds in best.items()}
    result = {
        "bench": "io_throughput",
        "rows": args.rows,
        "natoms": len(frames[0].atoms),
        "repeats": args.repeats,
        "write_rows_per_s": round(rate["write"], 1),
        "read_rows_per_s": round(rate["read"], 1),
        "ase_write_rows_per_s": round(rate["ase_write"], 1),
        "ase_read_rows_per_s": round(rate["ase_read"], 1),
        "write_vs_ase": round(rate["write"] / rate["ase_write"], 2),
        "read_vs_ase": round(rate["read"] / rate["ase_read"], 2),
        "bytes_per_row": round(sizes["ours"] / args.rows),
        "ase_bytes_per_row": round(sizes["ase"] / args.rows),
        "write_target": WRITE_TARGET,
        "read_target": READ_TARGET,
        "targets_met": bool(rate["write"] >= WRITE_TARGET and rate["read"] >= READ_TARGET),
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
