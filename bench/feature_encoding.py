"""How cached teacher outputs are stored in a row's ``data``: base64 bytes (augkd.io.arrays) vs ASE's JSON arrays.

Prints ONE JSON line: rows/s written and read and bytes per row for 65-atom rows carrying teacher forces, per-atom
energies and 64-channel float16 node features, both encodings side by side in one run (the choice `augkd label`
makes is base64).

    python bench/feature_encoding.py [--rows 1500] [--channels 64]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
from ase.build import add_adsorbate, fcc111
from ase.constraints import FixAtoms

from augkd.io.arrays import encode_array
from augkd.io.aselmdb import read_aselmdb, write_aselmdb
from augkd.records import LabelledFrame


def frames(kind: str, rows: int, channels: int, rng: np.random.Generator) -> list[LabelledFrame]:
    atoms = fcc111("Cu", (4, 4, 4), vacuum=8.0)
    add_adsorbate(atoms, "O", 1.5, "fcc")
    atoms.set_constraint(FixAtoms(indices=range(32)))
    n = len(atoms)

    def store(array, dtype):
        return encode_array(array, dtype) if kind == "base64" else np.asarray(array, dtype=dtype)

    return [
        LabelledFrame(atoms, -1.0, rng.normal(size=(n, 3)), {
            "sid": f"s{i}", "fid": 0, "teacher_energy": -1.0,
            "teacher_forces": store(rng.normal(size=(n, 3)), "float32"),
            "teacher_atom_energy": store(rng.normal(size=n), "float32"),
            "teacher_features": {"node": store(rng.normal(size=(n, channels)), "float16")},
        })
        for i in range(rows)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--channels", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    result = {"bench": "feature_encoding", "rows": args.rows, "natoms": 65, "channels": args.channels}
    for kind in ("base64", "json_arrays"):
        batch = frames(kind, args.rows, args.channels, rng)
        path = os.path.join(tempfile.mkdtemp(), "shard.aselmdb")
        start = time.perf_counter()
        write_aselmdb(path, batch)
        written = time.perf_counter() - start
        start = time.perf_counter()
        for _ in read_aselmdb(path):
            pass
        read = time.perf_counter() - start
        result[kind] = {
            "write_rows_per_s": round(args.rows / written, 1),
            "read_rows_per_s": round(args.rows / read, 1),
            "bytes_per_row": os.path.getsize(path) // args.rows,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
