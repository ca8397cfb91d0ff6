"""Bringing data in: ``augkd import`` (the user's DFT files as a dataset) and ``augkd split`` (train/val/test)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _import(args: argparse.Namespace) -> int:
    from augkd.io.importers import ImportConfig, import_dataset

    config = ImportConfig(
        sources=tuple(args.sources), origin=args.origin, format=args.format, index=args.index, shards=args.shards,
        energy=args.energy, strict=args.strict,
    )
    manifest, job = import_dataset(config, args.out, workers=args.workers, progress=not args.quiet,
                                   resume=args.resume)
    print(job.summary(manifest, args.out))
    return 0


def _split(args: argparse.Namespace) -> int:
    from augkd.io.split import SplitConfig, split_dataset

    config = SplitConfig(val=args.val, test=args.test, by=args.by, seed=args.seed)
    outputs = {"train": args.out_train, "val": args.out_val}
    if args.out_test is not None:
        outputs["test"] = args.out_test
    manifests = split_dataset(args.source, config, outputs)
    for side, manifest in manifests.items():
        split = manifest["split"]
        print(f"{side}: {manifest['totals']['rows']} rows, {split['systems']} systems → {outputs[side]}")
    return 0


def register(commands) -> None:
    """Add this group's commands to ``commands`` (an argparse sub-parser set)."""
    imp = commands.add_parser(
        "import", help="your own DFT data (extxyz, ASE db/traj, VASP, GPAW, OC20 S2EF, fairchem aselmdb) as a dataset",
        description="Read labelled structures (energy and forces) from files and folders into an augkd dataset: "
                    "the same shards, checksums, manifest and resume rules as `augkd generate`.",
    )
    imp.add_argument("sources", nargs="+", metavar="SRC",
                     help="file, folder (searched recursively) or glob pattern; xz/gz/bz2-compressed text files too")
    imp.add_argument("--out", required=True, type=Path, metavar="DIR", help="dataset directory (created, or resumed)")
    imp.add_argument("--origin", default="dft", metavar="NAME", help="origin of the rows, the mixer's source name (default: dft)")
    imp.add_argument("--format", default="auto", choices=("auto", "ase", "aselmdb", "oc20-s2ef"),
                     help="auto (by file name; N.extxyz with N.txt is OC20 S2EF), ase (every file through ASE's "
                          "readers, N.txt ignored), aselmdb (fairchem .aselmdb files only), oc20-s2ef (pairs only)")
    imp.add_argument("--index", metavar="SLICE", help="frames to take from every file, in ASE's syntax: -1 (last), ::10, 0:5 "
                                     "(default: all); fid keeps the frame's own step index")
    imp.add_argument("--shards", type=int, metavar="K", help="units of work (default: one per 5000 frames); extxyz files are "
                                                "cut at frames, other files go whole to one shard")
    imp.add_argument("--energy", default="total", choices=("total", "adsorption"),
                     help="OC20 S2EF: total keeps the DFT energy, adsorption subtracts the N.txt reference energy "
                          "(default: total)")
    imp.add_argument("--strict", action="store_true",
                     help="refuse frames without energy or forces or with non-finite values (instead of dropping "
                          "them), and drop frames with neither FixAtoms nor tags")
    imp.add_argument("--workers", type=int, default=1, metavar="N", help="local processes (default 1)")
    imp.add_argument("--resume", action="store_true", help="only finish the import already in --out")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.set_defaults(run=_import)

    split = commands.add_parser(
        "split", help="split a dataset into train/val(/test) datasets, keeping each system on one side",
        description="A seeded split of an augkd dataset into ordinary datasets whose manifests name their parent.",
    )
    split.add_argument("source", type=Path, metavar="DIR", help="augkd dataset to split")
    split.add_argument("--val", required=True, type=float, metavar="F", help="fraction for validation, in (0, 1)")
    split.add_argument("--test", type=float, metavar="F", help="fraction for testing, in (0, 1) (needs --out-test)")
    split.add_argument("--by", default="system", choices=("system", "row"),
                       help="system: every frame of one sid on one side (default); row: rows independently")
    split.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the split (default 0)")
    split.add_argument("--out-train", required=True, type=Path, metavar="DIR1", help="dataset directory for the training side")
    split.add_argument("--out-val", required=True, type=Path, metavar="DIR2", help="dataset directory for the validation side")
    split.add_argument("--out-test", type=Path, metavar="DIR3", help="dataset directory for the test side (with --test)")
    split.set_defaults(run=_split)
