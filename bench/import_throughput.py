"""Throughput of ``augkd import`` on an extxyz file against ``ase.io.read`` of the same file alone.

Prints ONE JSON line on stdout: rows/s of a whole import (plan: find, hash and index the file; read and convert every
frame; write the shards, sidecars and manifest through the dataset writer, in this process) and of
``ase.io.read(file, index=":")``, with the ratio of the medians (target >= 0.7: augkd adds little to ASE's own
parsing). ``read_only`` is the import without the writer (plan + every shard's rows), to show where the rest goes.

Frames are OC20-like ~60-atom rows as an S2EF extxyz holds them: a Cu fcc111 (3, 4, 5) slab with an O adsorbate
(61 atoms), ``move_mask`` (FixAtoms on the two bottom layers), tags 0/1/2, energy, free_energy and forces.

The variants run interleaved (bench/interleave.py): one untimed warm-up of each, then ``--repeats`` rounds of one of
each (A B C A B C ...), so that a disturbance of a shared machine hits them alike. Each import writes a fresh
directory, removed untimed afterwards. Modules are imported before timing (an import's start-up is not its rate).

    python bench/import_throughput.py [--frames 500] [--repeats 5] [--shards 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.modules.setdefault("nvalchemiops", None)  # as the CLI does: no CUDA probe from fairchem's warp backend

import ase.io
import numpy as np
from interleave import interleave, timed

from augkd.io.importers import ImportConfig, import_dataset, import_shard, plan_import

TARGET = 0.7  # import rows/s ÷ ase.io.read rows/s


def make_frames(n: int, seed: int = 0) -> list:
    from ase.build import add_adsorbate, fcc111
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixAtoms

    rng = np.random.default_rng(seed)
    base = fcc111("Cu", size=(3, 4, 5), vacuum=10.0)  # 60 Cu
    layer = base.get_tags()  # 1 = top layer ... 5 = bottom layer
    base.set_tags(np.where(layer <= 2, 1, 0))
    add_adsorbate(base, "O", height=1.2, position="fcc")
    base.info.clear()
    tags = base.get_tags()
    tags[-1] = 2
    base.set_tags(tags)
    fixed = np.flatnonzero(tags == 0)
    frames = []
    for _ in range(n):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.set_constraint(FixAtoms(indices=fixed))
        energy = float(rng.normal(-250.0, 5.0))
        atoms.calc = SinglePointCalculator(atoms, energy=energy, free_energy=energy,
                                           forces=rng.normal(scale=0.5, size=(len(atoms), 3)))
        frames.append(atoms)
    return frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed passes of each")
    parser.add_argument("--shards", type=int, default=1, help="import --shards (default 1)")
    args = parser.parse_args(argv)

    frames = make_frames(args.frames)
    natoms = len(frames[0])
    with tempfile.TemporaryDirectory(prefix="augkd-import-bench-") as tmp:
        tmp = Path(tmp)
        source = tmp / "s2ef.extxyz"
        ase.io.write(source, frames, format="extxyz")
        config = ImportConfig(sources=(str(source),), shards=args.shards)

        def import_pass() -> float:
            out = tmp / "imported"
            seconds = timed(lambda: import_dataset(config, out, progress=False))
            shutil.rmtree(out)
            return args.frames / seconds

        def read_only() -> None:
            plan = plan_import(config)
            for index in range(plan.shard_count):
                import_shard(plan, index)

        variants = {
            "import": import_pass,
            "ase_read": lambda: args.frames / timed(lambda: ase.io.read(source, index=":")),
            "read_only": lambda: args.frames / timed(read_only),
        }
        ratios = {"import_vs_ase_read": ("import", "ase_read"), "read_only_vs_ase_read": ("read_only", "ase_read")}
        measured = interleave(variants, repeats=args.repeats, ratios=ratios)
        size = source.stat().st_size

    result = {"bench": "import_throughput", "frames": args.frames, "natoms": natoms, "file_bytes": size,
              "shards": args.shards, "repeats": args.repeats}
    for key in variants:
        result[f"{key}_rows_per_s"] = round(measured.median[key], 1)
        result[f"{key}_rows_per_s_min"] = round(measured.min[key], 1)
        result[f"{key}_rows_per_s_max"] = round(measured.max[key], 1)
    for key in ratios:
        result[key] = round(measured.ratios[key], 3)
        result[f"{key}_rounds"] = [round(r, 3) for r in measured.round_ratios[key]]
    result.update({
        "target": TARGET,
        "target_met": bool(measured.ratios["import_vs_ase_read"] >= TARGET),
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    })
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
