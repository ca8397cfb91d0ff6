"""Using a trained student: export, relax, md."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from pathlib import Path

#: ``augkd md`` exit status when the run became unstable (bad input is 2, as everywhere)
EXIT_UNSTABLE = 3
#: ``augkd relax`` exit status when fmax was not reached within --steps
EXIT_NOT_CONVERGED = 1


@contextlib.contextmanager
def _one_line_warnings():
    """Warnings as ``augkd: warning: ...`` lines on stderr, as they happen, while a command runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")

        def show(message, category, filename, lineno, file=None, line=None):
            print(f"augkd: warning: {message}", file=sys.stderr)

        warnings.showwarning = show
        yield


def _export(args: argparse.Namespace) -> int:
    from augkd.student.export import export_student

    with _one_line_warnings():
        path = export_student(args.source, args.out, script=not args.no_script)
    print(path)
    return 0


def _relax(args: argparse.Namespace) -> int:
    from augkd.student.relax import relax_file

    with _one_line_warnings():
        result = relax_file(
            args.structure, args.model, args.out, fmax=args.fmax, steps=args.steps, optimizer=args.optimizer,
            device=args.device, threads=args.threads, allow_unseen=args.allow_unseen,
            logfile=None if args.quiet else "-",
        )
    print(json.dumps({"out": str(args.out), **result.summary()}))
    if not result.converged:
        print(f"augkd: relax: fmax {result.fmax:.4f} eV/Å > {args.fmax:g} after {result.steps} steps", file=sys.stderr)
        return EXIT_NOT_CONVERGED
    return 0


def _md(args: argparse.Namespace) -> int:
    from augkd.student.md import MDSettings, md_file

    settings = MDSettings(
        ensemble=args.ensemble, temperature_K=args.temperature, timestep_fs=args.timestep, steps=args.steps,
        thermostat=args.thermostat, friction_per_fs=args.friction, taut_fs=args.taut, seed=args.seed,
        interval=args.interval,
    )
    with _one_line_warnings():
        result = md_file(
            args.structure, args.model, args.out, settings, log=args.log, device=args.device, threads=args.threads,
            skin=args.skin, allow_unseen=args.allow_unseen, progress=not args.quiet,
        )
    print(json.dumps({"out": str(args.out), **result.summary()}))
    if not result.stable:
        print(f"augkd: md stopped: unstable at step {result.steps} (t = {result.time_fs / 1000:.4f} ps of "
              f"{settings.steps * settings.timestep_fs / 1000:.4f} ps): {result.reason}", file=sys.stderr)
        return EXIT_UNSTABLE
    return 0


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="a student (exported student.pt, best.pt/final.pt/last.pt, or a run directory) or a "
                             "teacher spec (chgnet, sevennet, emt, ckpt:PATH, ase:module.Class, fairchem:PATH)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when visible), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int,
                        help="torch threads (default: SLURM_CPUS_PER_TASK, else the CPUs this process may use)")
    parser.add_argument("--allow-unseen", action="store_true",
                        help="run structures with elements the model was not trained on (a warning, not an error)")


def register(commands) -> None:
    """Add this group's commands to ``commands`` (an argparse sub-parser set)."""
    export = commands.add_parser("export", help="write a trained student as one self-contained file")
    export.add_argument("source", type=Path, metavar="RUN|CKPT",
                        help="a training run directory (its checkpoints/best.pt) or a checkpoint file "
                             "(best.pt, final.pt, last.pt: EMA weights)")
    export.add_argument("--out", required=True, type=Path, help="the student file to write, e.g. student.pt")
    export.add_argument("--no-script", action="store_true",
                        help="store weights only, without the TorchScript module (loads only with augkd)")
    export.set_defaults(run=_export)

    relax = commands.add_parser("relax", help="relax a structure with a student or a teacher (ASE optimizer)")
    relax.add_argument("structure", type=Path, metavar="STRUCTURE", help="any structure file ASE reads (last image)")
    _add_model_arguments(relax)
    relax.add_argument("--fmax", type=float, default=0.05, help="eV/Å: stop when max |F| on free atoms is below")
    relax.add_argument("--steps", type=int, default=200, help="at most this many optimizer steps")
    relax.add_argument("--optimizer", default="BFGS", help="BFGS, FIRE, LBFGS or BFGSLineSearch (ASE's)")
    relax.add_argument("--out", required=True, type=Path, help="trajectory (.traj); its last frame is the result")
    relax.add_argument("--quiet", action="store_true", help="no optimizer log on stdout")
    relax.set_defaults(run=_relax)

    md = commands.add_parser("md", help="molecular dynamics with a student or a teacher (ASE integrators); "
                                        f"exit {EXIT_UNSTABLE} when it becomes unstable")
    md.add_argument("structure", type=Path, metavar="STRUCTURE", help="any structure file ASE reads (last image)")
    _add_model_arguments(md)
    md.add_argument("--ensemble", default="nvt", help="nve (velocity Verlet) or nvt (--thermostat)")
    md.add_argument("--temperature", type=float, default=300.0,
                    help="K: initial Maxwell–Boltzmann velocities and the NVT target")
    md.add_argument("--timestep", type=float, default=1.0, help="fs, in (0, 10]")
    md.add_argument("--steps", type=int, default=1000, help="MD steps")
    md.add_argument("--thermostat", default="langevin", help="nvt: langevin or bussi")
    md.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    md.add_argument("--taut", type=float, default=100.0, help="Bussi time constant, fs")
    md.add_argument("--seed", type=int, default=0, help="seed of the initial velocities and thermostat noise")
    md.add_argument("--interval", type=int, default=10, help="steps between trajectory frames and log rows")
    md.add_argument("--skin", type=float,
                    help="Å: Verlet skin of a student's neighbour list (default: the file's, 1 Å; 0: rebuild "
                         "every step)")
    md.add_argument("--out", required=True, type=Path, help="trajectory (.traj)")
    md.add_argument("--log", type=Path,
                    help="CSV of step, time, energies, temperature, max |F| (default: --out with suffix .csv)")
    md.add_argument("--quiet", action="store_true", help="no progress bar")
    md.set_defaults(run=_md)
