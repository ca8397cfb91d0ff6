"""Throughput of the ``.aselmdb`` shard writer/reader against plain ASE, in one run.

Prints ONE JSON line on stdout: rows/s written and read by ``augkd.io.aselmdb`` and, side by side, by plain ASE
(``db.write(atoms_with_SinglePointCalculator, data=...)`` inside one transaction; ``row.toatoms()`` per row), with
the ratios. Frames are ~60-atom OC20-like rows: a Cu fcc111 (4, 4, 4) slab with an O adsorbate (65 atoms), FixAtoms
on the two bottom layers, tags 0/1/2, random energy and forces, and the provenance ``data`` dict.

The four passes (our write, ASE's write, our read, ASE's read) run interleaved (bench/interleave.py): one untimed
warm-up of each, then ``--repeats`` rounds of one of each, so that a disturbance of a shared machine hits them alike.
Each write goes to a fresh file (removed untimed afterwards); reads read files written once beforehand, untimed.
The rates reported are medians (``*_min``/``*_max``: the slowest/fastest pass); the ratios are ratios of medians.

    python bench/io_throughput.py [--rows 2000] [--repeats 5] [--profile write|read]

``--profile`` prints a cProfile of one write or read of ours on stderr (stdout keeps its single JSON line).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
from pathlib import Path

import numpy as np
from interleave import interleave, timed

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
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed passes of each")
    parser.add_argument("--profile", choices=("write", "read"), default=None)
    args = parser.parse_args(argv)

    frames = make_frames(args.rows)
    atoms_data = _ase_atoms(frames)
    sizes = {}
    with tempfile.TemporaryDirectory(prefix="augkd-io-bench-") as tmp:
        tmp = Path(tmp)
        ours_in, theirs_in = tmp / "ours-read.aselmdb", tmp / "ase-read.aselmdb"
        ours_write(frames, ours_in)  # what the read passes read, written untimed
        ase_write(atoms_data, theirs_in)
        assert count_aselmdb(ours_in) == args.rows
        sizes = {"ours": ours_in.stat().st_size, "ase": theirs_in.stat().st_size}

        def write_pass(write, items, name: str):
            def run() -> float:
                target = tmp / f"{name}-write.aselmdb"
                seconds = timed(lambda: write(items, target))
                remove_lmdb(target)
                return args.rows / seconds

            return run

        variants = {
            "write": write_pass(ours_write, frames, "ours"),
            "ase_write": write_pass(ase_write, atoms_data, "ase"),
            "read": lambda: args.rows / timed(lambda: ours_read(ours_in, args.rows)),
            "ase_read": lambda: args.rows / timed(lambda: ase_read(theirs_in, args.rows)),
        }
        ratios = {"write_vs_ase": ("write", "ase_write"), "read_vs_ase": ("read", "ase_read")}
        measured = interleave(variants, repeats=args.repeats, ratios=ratios)
        if args.profile:
            prof = cProfile.Profile()
            target = tmp / "profile.aselmdb"
            if args.profile == "write":
                prof.runcall(ours_write, frames, target)
            else:
                ours_write(frames, target)
                prof.runcall(ours_read, target, args.rows)
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)

    rate = measured.median
    result = {
        "bench": "io_throughput",
        "rows": args.rows,
        "natoms": len(frames[0].atoms),
        "repeats": args.repeats,
    }
    for key in variants:  # medians under the old names, then the slowest/fastest pass
        result[f"{key}_rows_per_s"] = round(rate[key], 1)
    for key in variants:
        result[f"{key}_rows_per_s_median"] = round(rate[key], 1)
        result[f"{key}_rows_per_s_min"] = round(measured.min[key], 1)
        result[f"{key}_rows_per_s_max"] = round(measured.max[key], 1)
    for key, (top, bottom) in ratios.items():
        result[key] = round(measured.ratios[key], 2)
        result[f"{key}_median"] = round(measured.ratios[key], 2)
        result[f"{key}_min"] = round(measured.min[top] / measured.min[bottom], 2)  # ratio of the slowest passes
        result[f"{key}_rounds"] = [round(r, 2) for r in measured.round_ratios[key]]
    result.update({
        "bytes_per_row": round(sizes["ours"] / args.rows),
        "ase_bytes_per_row": round(sizes["ase"] / args.rows),
        "write_target": WRITE_TARGET,
        "read_target": READ_TARGET,
        "targets_met": bool(rate["write"] >= WRITE_TARGET and rate["read"] >= READ_TARGET),
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    })
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
