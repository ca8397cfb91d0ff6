"""The ``augkd`` command: parses, validates and calls one entry point per command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from augkd.errors import AugkdError


def _generate(args: argparse.Namespace) -> int:
    from augkd.config import compose
    from augkd.distributed.local import run_generate
    from augkd.generators.d1m import GenerateConfig

    flags = {
        "systems": args.systems,
        "seed": args.seed,
        "shards": args.shards,
        "teacher": args.teacher,
        "frames.fraction": args.frames_fraction,
        "relax.fmax": args.fmax,
        "relax.steps": args.steps,
        "relax.optimizer": args.optimizer,
        "systems_sampler.bulks": args.bulks,
        "systems_sampler.max_atoms": args.max_atoms,
        "workers": args.workers,
    }
    if args.elements is not None:
        flags["systems_sampler.elements"] = [e for e in args.elements.replace(",", " ").split() if e]
    if args.teacher_kwargs is not None:
        try:
            flags["teacher_kwargs"] = json.loads(args.teacher_kwargs)
        except ValueError:
            flags["teacher_kwargs"] = None
        if not isinstance(flags["teacher_kwargs"], dict):
            raise AugkdError(f"--teacher-kwargs {args.teacher_kwargs!r} is not a JSON object")
    if args.keep_final:
        flags["frames.keep_final"] = True
    values = compose("generate", args.kind, list(args.overrides))
    for dotted, value in flags.items():  # flags win over overrides and the yaml
        if value is not None:
            *parents, leaf = dotted.split(".")
            section = values
            for parent in parents:
                section = section[parent]
            section[leaf] = value
    workers = values.pop("workers", 1)
    config = GenerateConfig.from_dict(values)
    manifest = run_generate(config, args.out, workers=workers, progress=not args.quiet)
    totals = manifest["totals"]
    print(
        f"wrote {totals['rows']} rows from {totals.get('systems_kept', 0)}/{config.systems} systems "
        f"to {args.out} ({len(manifest['shards'])} shards)"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from augkd.io.summary import dataset_info, format_info

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="augkd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="generate a teacher-labelled synthetic dataset")
    gen.add_argument("kind", help="dataset recipe: a config in configs/generate/ (d1M)")
    gen.add_argument("--out", required=True, type=Path, help="dataset directory (created, or resumed)")
    gen.add_argument("--systems", type=int, help="number of adsorbate–slab systems")
    gen.add_argument("--teacher", help="chgnet[:version] (default), sevennet[:model], emt, ase:<module.Class>")
    gen.add_argument("--teacher-kwargs", help="JSON object of keyword arguments for an ase: teacher")
    gen.add_argument("--seed", type=int)
    gen.add_argument("--shards", type=int, help="units of work (default: one per 200 systems)")
    gen.add_argument("--frames-fraction", type=float, help="probability of keeping each frame (default 0.1)")
    gen.add_argument("--keep-final", action="store_true", help="always keep the final frame of each trajectory")
    gen.add_argument("--fmax", type=float, help="convergence threshold in eV/Å (default 0.03)")
    gen.add_argument("--steps", type=int, help="optimizer steps at most (default 200)")
    gen.add_argument("--optimizer", help="ase.optimize class (default BFGS)")
    gen.add_argument("--elements", help="element allow-list, e.g. Cu,Pt,O,H,C")
    gen.add_argument("--bulks", help="bulk database: OC20 bulks.pkl, ASE-readable file(s) or folder")
    gen.add_argument("--max-atoms", type=int, help="largest adslab (atoms)")
    gen.add_argument("--workers", type=int, help="local processes (default 1)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.add_argument("overrides", nargs="*", help="hydra-style overrides, e.g. filters.max_abs_force=30")
    gen.set_defaults(run=_generate)

    info = commands.add_parser("info", help="counts, origins, elements, label statistics of a dataset")
    info.add_argument("path", type=Path)
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=_info)

    verify = commands.add_parser("verify", help="check checksums, readability and row counts of a dataset")
    verify.add_argument("path", type=Path)
    verify.set_defaults(run=_verify)

    convert = commands.add_parser("convert", help="convert between augkd datasets and legacy OCP v1 LMDBs")
    convert.add_argument("source", type=Path, help="augkd dataset directory, or OCP .lmdb file/folder")
    convert.add_argument("--to", required=True, choices=("ocp-lmdb", "aselmdb"))
    convert.add_argument("--out", required=True, type=Path)
    convert.add_argument("--origin", help="origin of rows that do not carry one (default: dft)")
    convert.set_defaults(run=_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # hydra-style key=value overrides may stand anywhere among the flags, which argparse cannot express
    args, extra = parser.parse_known_args(argv)
    strays = [item for item in extra if item.startswith("-") or "=" not in item]
    if strays or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(strays or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    try:
        return args.run(args)
    except AugkdError as exc:
        print(f"augkd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
