"""The ``augkd`` command: parses, validates and calls one entry point per command.

Each module of this package registers its commands (``register(commands)``) and holds only argument parsing and
the call into the stage that does the work.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from augkd.errors import AugkdError

# the order in which `augkd --help` lists the command groups
COMMAND_MODULES = ("jobs", "imports", "datasets", "training", "student")

DESCRIPTION = (
    "augkd makes fast machine-learned interatomic potentials by knowledge distillation: a teacher labels "
    "synthetic adsorbate–slab data and jittered copies of yours, and a small student learns from the mix."
)


def build_parser() -> argparse.ArgumentParser:
    from augkd import __version__

    parser = argparse.ArgumentParser(prog="augkd", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"augkd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"augkd.cli.{name}").register(commands)
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
        status = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return status
    except AugkdError as exc:
        print(f"augkd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `augkd info DIR | head`: the reader left, nothing more to say
        _silence_stdout()
        return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's exit-time flush of a closed pipe raises nothing."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def __getattr__(name: str):
    if name == "JOBS":  # the job table, for callers that enumerate jobs
        from augkd.cli.jobs import JOBS

        return JOBS
    raise AttributeError(name)
