"""Arguments that several command groups share."""

from __future__ import annotations

import argparse

THREADS_HELP = ("torch threads of each computing process (default: SLURM_CPUS_PER_TASK, else the CPUs this process "
                "may use divided among its local workers)")
DEVICE_HELP = "where the model runs: auto (default: CUDA when visible), cpu, cuda or cuda:N"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def add_threads_argument(parser: argparse.ArgumentParser, help: str = THREADS_HELP) -> None:
    parser.add_argument("--threads", type=positive_int, metavar="N", help=help)
