"""What a user sees first: --version, --help, help on every argument, a closed pipe."""

from __future__ import annotations

import argparse
import subprocess
import sys

from augkd import __version__
from augkd.cli import build_parser
from augkd.vocabulary import KD_LOSS_NAMES, TEACHER_SPECS


def _parsers(parser: argparse.ArgumentParser, path=("augkd",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_version():
    done = subprocess.run([sys.executable, "-m", "augkd.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"augkd {__version__}"


def test_help_opens_with_what_the_tool_does():
    text = build_parser().format_help()
    description = text.split("\n\n")[1]
    assert description.startswith("augkd makes fast machine-learned interatomic potentials")


def test_every_argument_has_help():
    missing = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)):
                continue
            if not action.help:
                missing.append(f"{' '.join(path)} {action.option_strings or action.dest}")
    assert missing == []


def test_teacher_and_kd_help_list_every_choice():
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if "--teacher" in action.option_strings:
                for spec in TEACHER_SPECS:
                    assert spec in action.help, (path, spec)
            if "--kd" in action.option_strings:
                for name in KD_LOSS_NAMES:
                    assert name in action.help


def test_closed_pipe_exits_quietly(tmp_path):
    from mixers.mixer_helpers import emt_dataset

    data = emt_dataset(tmp_path / "d", rows=2, origin="dft")
    # the reader closes its end before augkd writes: every write meets a closed pipe
    script = f"{sys.executable} -m augkd.cli info {data} | (exec 0<&-; sleep 1)"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True, text=True)
    assert done.stderr == "" and done.returncode == 0, done.stderr
