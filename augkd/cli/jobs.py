"""Shard jobs (generate, label, jitter), their SLURM arrays and merge."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from augkd.cli.common import add_threads_argument
from augkd.errors import AugkdError
from augkd.vocabulary import teacher_help


def _teacher_kwargs(text: str) -> dict:
    """``--teacher-kwargs``: a JSON object, or a one-line error."""
    try:
        kwargs = json.loads(text)
    except ValueError:
        kwargs = None
    if not isinstance(kwargs, dict):
        raise AugkdError(f"--teacher-kwargs {text!r} is not a JSON object")
    return kwargs


def _batch_atoms(text: str | None):
    """``--batch-atoms``: a positive integer or ``auto``."""
    if text is None or text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise AugkdError(f"--batch-atoms {text!r} is neither a number of atoms nor 'auto'") from None


def _device(args: argparse.Namespace) -> str:
    """``--device`` (``auto`` when not given, and in ``slurm submit``, whose tasks see only their own GPUs)."""
    return getattr(args, "device", None) or "auto"


def _generate_job(args: argparse.Namespace):
    """The job of a ``generate`` command line (yaml ← overrides ← flags) and its ``workers`` value."""
    from augkd.config import apply_flags, compose
    from augkd.distributed.jobs import GenerateJob
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
        "relaxer": args.relaxer,
        "batch.max_atoms": _batch_atoms(args.batch_atoms),
        "systems_sampler.bulks": args.bulks,
        "systems_sampler.max_atoms": args.max_atoms,
        "workers": getattr(args, "workers", None),
    }
    if args.elements is not None:
        flags["systems_sampler.elements"] = [e for e in args.elements.replace(",", " ").split() if e]
    if args.teacher_kwargs is not None:
        flags["teacher_kwargs"] = _teacher_kwargs(args.teacher_kwargs)
    if args.keep_final:
        flags["frames.keep_final"] = True
    values = apply_flags(compose("generate", args.kind, list(args.overrides)), flags)
    workers = values.pop("workers", 1)
    config = GenerateConfig.from_dict(values)
    note = config.relaxer_choice.note
    if note and not args.quiet:
        print(f"augkd: {note}", file=sys.stderr)
    return GenerateJob(config, device=_device(args)), workers


def _label_job(args: argparse.Namespace):
    from augkd.distributed.jobs import LabelJob
    from augkd.generators.label import LabelConfig

    kwargs = _teacher_kwargs(args.teacher_kwargs) if args.teacher_kwargs else {}
    features, atom_energy = _features(args.features)
    config = LabelConfig(
        teacher=args.teacher, teacher_kwargs=kwargs, features=features, atom_energy=atom_energy,
        feature_dtype=args.feature_dtype,
    )
    return LabelJob(_existing_dataset(args.source), config, device=_device(args)), None


def _jitter_job(args: argparse.Namespace):
    from augkd.distributed.jobs import JitterJob
    from augkd.generators.jitter import JitterConfig

    features, atom_energy = _features(args.features)
    options = {
        "norm": args.norm, "mode": args.mode, "copies": args.copies, "seed": args.seed, "teacher": args.teacher,
        "teacher_kwargs": _teacher_kwargs(args.teacher_kwargs) if args.teacher_kwargs else {},
        "student": str(Path(args.student).resolve()) if args.student else None, "steps": args.steps,
        "step_size": args.step_size, "attack_loss": args.attack_loss, "features": features,
        "atom_energy": atom_energy, "feature_dtype": args.feature_dtype,
        "all_atoms_free": args.all_atoms_free, "force_large_norm": args.force_large_norm, "device": _device(args),
        "batch_size": args.batch_size,
    }
    if args.student and not Path(args.student).is_file():
        raise AugkdError(f"--student {args.student}: no such checkpoint file")
    config = JitterConfig(**{key: value for key, value in options.items() if value is not None})
    return JitterJob(_existing_dataset(args.source), config), None


def _features(text: str | None) -> tuple[tuple[str, ...], bool]:
    """``--features atom_energy,node,...`` → (the feature names, whether per-atom energies are cached)."""
    names = [name for name in (text or "").replace(" ", "").split(",") if name]
    return tuple(name for name in names if name != "atom_energy"), "atom_energy" in names


def _existing_dataset(path: Path) -> Path:
    from augkd.io.dataset import shard_paths

    shard_paths(path)  # one-line error for anything but a finished, undamaged dataset, before anything is written
    return path.resolve()


def _recipe_argv(add_recipe, args: argparse.Namespace) -> list[str]:
    """The recipe part of a job's command line, rebuilt from parsed flags (what SLURM array tasks rerun)."""
    argv = []
    for action in add_recipe(argparse.ArgumentParser(add_help=False)):
        value = getattr(args, action.dest, None)
        if not action.option_strings:
            argv.append(str(value))
        elif value is not None and value is not False:
            argv += [action.option_strings[0]] if value is True else [action.option_strings[0], str(value)]
    return argv + list(getattr(args, "overrides", []))


def _task_argv(args: argparse.Namespace, command: str) -> list[str]:
    add_recipe = JOBS[command][0]
    device = ["--device", args.device] if getattr(args, "device", None) else []
    threads = ["--threads", str(args.threads)] if getattr(args, "threads", None) else []
    return [command, *_recipe_argv(add_recipe, args), "--out", str(args.out.resolve()), *device, *threads, "--quiet"]


def _run_job(args: argparse.Namespace) -> int:
    from augkd.distributed.executors import ExecutionRequest, execute

    job, default_workers = JOBS[args.command][1](args)
    workers = args.workers if args.workers is not None or args.executor == "dask" else default_workers
    request = ExecutionRequest(
        executor=args.executor, workers=workers, scheduler=args.scheduler, cluster=args.cluster,
        shard_index=args.shard_index, resume=args.resume, progress=not args.quiet, threads=args.threads,
    )
    done = execute(job, args.out, request, task_argv=_task_argv(args, args.command))
    if "shard" in done:
        print(f"shard {args.shard_index}: {done['shard']['rows']} rows in {args.out} (no manifest: `augkd merge`)")
    elif "submission" in done:
        print(f"submitted job array {done['submission'].job_id} (--array={done['submission'].array}) for {args.out}")
    else:
        print(job.summary(done["manifest"], args.out))
    return 0


def _slurm_submit(args: argparse.Namespace) -> int:
    from augkd.distributed.slurm_array import ArrayOptions, submit_array

    job, _ = JOBS[args.submit_what][1](args)
    options = ArrayOptions(
        parallel=args.parallel, time=args.time, partition=args.partition, gpus_per_task=args.gpus_per_task,
        cpus_per_task=args.cpus_per_task, mem=args.mem, augkd=args.augkd, template=args.template,
    )
    submission = submit_array(job, args.out, _task_argv(args, args.submit_what), options, dry_run=args.dry_run)
    return _report_submission(submission, args.dry_run)


def _report_submission(submission, dry_run: bool) -> int:
    if dry_run:
        print(submission.script, end="")
    else:
        print(f"submitted job array {submission.job_id} (--array={submission.array}); script {submission.script_path}")
    return 0


def _slurm_status(args: argparse.Namespace) -> int:
    from augkd.distributed.slurm_array import shard_status

    status = shard_status(args.path)
    if args.json:
        print(json.dumps(status))
        return 0
    for shard in status["shards"]:
        slurm = f"  (slurm: {shard['slurm']})" if shard["slurm"] else ""
        print(f"shard {shard['index']:5d}  {shard['state']}{slurm}")
    merged = ", merged" if status["merged"] else ""
    print(f"{status['complete']}/{status['shard_count']} shards complete{merged}; jobs {', '.join(status['jobs']) or '-'}")
    return 0


def _slurm_resubmit(args: argparse.Namespace) -> int:
    from augkd.distributed.slurm_array import resubmit

    submission = resubmit(args.path, parallel=args.parallel, dry_run=args.dry_run)
    return _report_submission(submission, args.dry_run)


def _merge(args: argparse.Namespace) -> int:
    from augkd.distributed.merge import merge_dataset

    manifest = merge_dataset(args.path)
    print(f"{args.path}: {len(manifest['shards'])} shards verified, {manifest['totals']['rows']} rows; manifest written")
    return 0


def _add_generate_recipe(gen: argparse.ArgumentParser) -> list[argparse.Action]:
    """Flags that decide what a generated dataset holds (not how it is run); returned to rebuild command lines."""
    return [
        gen.add_argument("kind", help="dataset recipe: a config in configs/generate/ (d1M)"),
        gen.add_argument("--systems", type=int, help="number of adsorbate–slab systems"),
        gen.add_argument("--teacher", help=teacher_help("labelling and relaxing teacher: ")),
        gen.add_argument("--teacher-kwargs", help=TEACHER_KWARGS_HELP),
        gen.add_argument("--seed", type=int, help="seed of the system sampler and frame selection (default 0)"),
        gen.add_argument("--shards", type=int, help="units of work (default: one per 200 systems)"),
        gen.add_argument("--frames-fraction", type=float, help="probability of keeping each frame (default 0.1)"),
        gen.add_argument("--keep-final", action="store_true", help="always keep the final frame of each trajectory"),
        gen.add_argument("--fmax", type=float, help="convergence threshold in eV/Å (default 0.03)"),
        gen.add_argument("--steps", type=int, help="optimizer steps at most (default 200)"),
        gen.add_argument("--optimizer", help="ase.optimize class (default: FIRE when batched, else BFGS)"),
        gen.add_argument("--relaxer", choices=("auto", "batched", "ase"),
                         help="batched FIRE over many systems per teacher call (torch teachers), ASE one system at "
                              "a time, or auto (default: batched for torch teachers)"),
        gen.add_argument("--batch-atoms", help="batched relaxer: atoms per teacher call, or auto (measured)"),
        gen.add_argument("--elements", help="element allow-list, e.g. Cu,Pt,O,H,C"),
        gen.add_argument("--bulks", help="bulk database: OC20 bulks.pkl, ASE-readable file(s) or folder"),
        gen.add_argument("--max-atoms", type=int, help="largest adslab (atoms)"),
    ]


def _add_label_recipe(label: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        label.add_argument("source", type=Path, help="augkd dataset to label"),
        label.add_argument("--teacher", required=True, help=teacher_help("teacher whose outputs to cache: ")),
        label.add_argument("--teacher-kwargs", help=TEACHER_KWARGS_HELP),
        label.add_argument("--features", help="teacher outputs to cache besides energy and forces, comma list: "
                           "atom_energy,node,vector,edge,... (what the KD losses read)"),
        label.add_argument("--feature-dtype", default="float16", choices=("float16", "float32"),
                           help="storage type of cached features (default float16)"),
    ]


def _add_jitter_recipe(jitter: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        jitter.add_argument("--in", dest="source", required=True, type=Path, help="augkd dataset to displace"),
        jitter.add_argument("--norm", required=True, type=float, help="displacement of every free atom, Å"),
        jitter.add_argument("--mode", default="rattle", help="rattle (random directions) or adversarial"),
        jitter.add_argument("--teacher", help=teacher_help("labelling teacher, attacked when differentiable: ")),
        jitter.add_argument("--teacher-kwargs", help=TEACHER_KWARGS_HELP),
        jitter.add_argument("--student", help="adversarial: student checkpoint whose error to the teacher grows"),
        jitter.add_argument("--copies", type=int, help="displaced copies per input row (default 1)"),
        jitter.add_argument("--seed", type=int, help="seed of the displacements (default 0)"),
        jitter.add_argument("--steps", type=int, help="adversarial: projected ascent steps (default 1)"),
        jitter.add_argument("--step-size", type=float, help="adversarial: ascent step, Å (default: --norm)"),
        jitter.add_argument("--attack-loss", help="adversarial: forces (default), vanilla1 or vanilla2"),
        jitter.add_argument("--features", help="teacher outputs to cache as `augkd label` does: atom_energy,node,..."),
        jitter.add_argument("--feature-dtype", choices=("float16", "float32"),
                            help="storage type of cached features (default float16)"),
        jitter.add_argument("--all-atoms-free", action="store_true",
                            help="let every atom of rows without tags or FixAtoms move (else they are refused)"),
        jitter.add_argument("--force-large-norm", action="store_true", help="allow --norm above 1 Å"),
        jitter.add_argument("--batch-size", type=int, help="structures per batched model call (default: 16 on CUDA, 2 on "
                            "a CPU, where larger passes run slower per atom)"),
    ]


def _add_execution_arguments(parser: argparse.ArgumentParser) -> None:
    """How a job runs (never what it makes): shared by generate, label and jitter."""
    parser.add_argument("--out", required=True, type=Path, help="dataset directory (created, or resumed)")
    parser.add_argument("--workers", type=int, help="local processes (default 1); dask workers (default: per GPU/core)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--device", help="where the teacher runs: auto (default: CUDA when the worker sees a GPU), "
                        "cpu, cuda or cuda:N")
    parser.add_argument("--executor", choices=("local", "dask", "slurm-array"), default="local",
                        help="local processes (default), Dask tasks, or one SLURM array task per shard")
    parser.add_argument("--scheduler", help="dask: address of a running scheduler, tcp://host:port")
    parser.add_argument("--cluster", help="dask: start workers as SLURM jobs: slurm (configs/distributed/slurm.yaml) "
                        "or a yaml file with a dask_cluster section")
    parser.add_argument("--shard-index", type=int, help="write only this shard, no manifest (a SLURM array task)")
    parser.add_argument("--resume", action="store_true", help="only finish the dataset already in --out")
    add_threads_argument(parser)


def _add_array_arguments(submit: argparse.ArgumentParser) -> None:
    submit.add_argument("--out", required=True, type=Path, help="dataset directory (plan written now)")
    submit.add_argument("--parallel", type=int, default=64, help="tasks running at once at most (default 64)")
    submit.add_argument("--partition", help="SLURM partition (default: the cluster's default)")
    submit.add_argument("--gpus-per-task", type=int, default=0, help="GPUs per task (default 0)")
    submit.add_argument("--cpus-per-task", type=int, default=1, help="CPUs per task (default 1)")
    submit.add_argument("--mem", help="memory per task, e.g. 16G")
    submit.add_argument("--time", default="04:00:00", help="wall time per task, HH:MM:SS (default 04:00:00)")
    submit.add_argument("--template", help="sbatch template with {{array}}, {{augkd}}, {{args}}")
    submit.add_argument("--augkd", help="command that runs augkd in a task (default: this Python)")
    submit.add_argument("--dry-run", action="store_true", help="print the script, submit nothing")
    submit.add_argument("--quiet", action="store_true", help="accepted as in the job's command (tasks never show progress)")
    add_threads_argument(submit, "torch threads per task (default: the task's --cpus-per-task)")


# command → (adds the flags that decide what the job makes, builds the job and its default worker count)
JOBS = {
    "generate": (_add_generate_recipe, _generate_job),
    "label": (_add_label_recipe, _label_job),
    "jitter": (_add_jitter_recipe, _jitter_job),
}
JOB_HELP = {
    "generate": "generate a teacher-labelled synthetic dataset",
    "label": "add cached teacher outputs (energy, forces, features) to a dataset",
    "jitter": "teacher-labelled rattled or adversarial copies of a dataset's rows",
}
OVERRIDES_HELP = "hydra-style overrides, e.g. filters.max_abs_force=30"
TEACHER_KWARGS_HELP = "JSON object of keyword arguments for the teacher (ase: and fairchem: teachers)"


def register(commands) -> None:
    for command, (add_recipe, _) in JOBS.items():
        job = commands.add_parser(command, help=JOB_HELP[command])
        add_recipe(job)
        _add_execution_arguments(job)
        if command == "generate":
            job.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
        job.set_defaults(run=_run_job)

    slurm = commands.add_parser("slurm", help="run a job (generate, label, ...) as a SLURM job array")
    slurm_commands = slurm.add_subparsers(dest="slurm_command", required=True)
    submit = slurm_commands.add_parser("submit", help="submit one array task per shard")
    submit_what = submit.add_subparsers(dest="submit_what", required=True)
    for command, (add_recipe, _) in JOBS.items():
        submit_job = submit_what.add_parser(command, help=f"the `augkd {command}` job to run, one task per shard")
        add_recipe(submit_job)
        _add_array_arguments(submit_job)
        if command == "generate":
            submit_job.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
        submit_job.set_defaults(run=_slurm_submit)
    status = slurm_commands.add_parser("status", help="per-shard state: complete/missing, plus SLURM's view")
    status.add_argument("path", type=Path, help="dataset directory of the submitted job")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(run=_slurm_status)
    again = slurm_commands.add_parser("resubmit", help="submit an array over the missing shards only")
    again.add_argument("path", type=Path, help="dataset directory of the submitted job")
    again.add_argument("--parallel", type=int, help="tasks at once (default: as submitted)")
    again.add_argument("--dry-run", action="store_true", help="print the script, submit nothing")
    again.set_defaults(run=_slurm_resubmit)

    merge = commands.add_parser("merge", help="verify every shard of a dataset and write its manifest")
    merge.add_argument("path", type=Path, help="dataset directory whose shards SLURM array tasks wrote")
    merge.set_defaults(run=_merge)
