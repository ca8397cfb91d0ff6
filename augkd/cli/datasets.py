"""Looking at datasets: info, verify, convert."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _info(args: argparse.Namespace) -> int:
    from augkd.io.summary import dataset_info, format_info

    if (args.path / "config.json").is_file() and not (args.path / "manifest.json").exists():
        from augkd.train.summary import format_run_info, run_info

        info = run_info(args.path)
        print(json.dumps(info) if args.json else format_run_info(info))
        return 0
    info = dataset_info(args.path)
    print(json.dumps(info) if args.json else format_info(info))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from augkd.io.dataset import verify_dataset

    problems = verify_dataset(args.path)
    for problem in problems:
        print(f"{args.path}/{problem.shard}: {problem.problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{args.path}: ok")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from augkd.io.convert import convert

    rows = convert(args.source, args.out, to=args.to, origin=args.origin)
    print(f"wrote {rows} rows to {args.out}")
    return 0


def register(commands) -> None:
    info = commands.add_parser("info", help="what a dataset holds, or a training run's sources, epochs and scores")
    info.add_argument("path", type=Path, help="dataset directory, or a training run directory")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=_info)

    verify = commands.add_parser("verify", help="check checksums, readability and row counts of a dataset")
    verify.add_argument("path", type=Path, help="dataset directory")
    verify.set_defaults(run=_verify)

    convert = commands.add_parser("convert", help="convert between augkd datasets and legacy OCP v1 LMDBs")
    convert.add_argument("source", type=Path, help="augkd dataset directory, or OCP .lmdb file/folder")
    convert.add_argument("--to", required=True, choices=("ocp-lmdb", "aselmdb"),
                         help="ocp-lmdb: OCP v1 LMDB files; aselmdb: an augkd dataset")
    convert.add_argument("--out", required=True, type=Path, help="output file or directory (must not exist)")
    convert.add_argument("--origin", help="origin of rows that do not carry one (default: dft)")
    convert.set_defaults(run=_convert)

