"""The ``augkd`` command: parses, validates and calls one entry point per command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from augkd.errors import AugkdError


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


def _generate_config(args: argparse.Namespace):
    """The GenerateConfig of a ``generate`` command line (yaml ← overrides ← flags) and its ``workers`` value."""
    from augkd.config import compose
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
    values = compose("generate", args.kind, list(args.overrides))
    for dotted, value in flags.items():  # flags win over overrides and the yaml
        if value is not None:
            *parents, leaf = dotted.split(".")
            section = values
            for parent in parents:
                section = section[parent]
            section[leaf] = value
    workers = values.pop("workers", 1)
    return GenerateConfig.from_dict(values), workers


def _recipe_argv(args: argparse.Namespace) -> list[str]:
    """The recipe part of a ``generate`` command line, rebuilt from parsed flags (what SLURM tasks rerun)."""
    argv = [args.kind]
    for action in _add_recipe_arguments(argparse.ArgumentParser(add_help=False)):
        value = getattr(args, action.dest, None)
        if not action.option_strings or value is None or value is False:
            continue
        argv += [action.option_strings[0]] if value is True else [action.option_strings[0], str(value)]
    return argv + list(args.overrides)


def _generate(args: argparse.Namespace) -> int:
    from augkd.distributed.executors import ExecutionRequest, generate

    config, workers = _generate_config(args)
    note = config.relaxer_choice.note
    if note and not args.quiet:
        print(f"augkd: {note}", file=sys.stderr)
    request = ExecutionRequest(
        executor=args.executor, workers=args.workers if args.executor == "dask" else workers,
        scheduler=args.scheduler, cluster=args.cluster, shard_index=args.shard_index, resume=args.resume,
        progress=not args.quiet,
    )
    task_argv = [*_recipe_argv(args), "--out", str(args.out.resolve()), "--quiet"]
    done = generate(config, args.out, request, generate_argv=task_argv)
    if "shard" in done:
        print(f"shard {args.shard_index}: {done['shard']['rows']} rows in {args.out} (no manifest: `augkd merge`)")
        return 0
    if "submission" in done:
        print(f"submitted job array {done['submission'].job_id} (--array={done['submission'].array}) for {args.out}")
        return 0
    manifest = done["manifest"]
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


def _slurm_submit(args: argparse.Namespace) -> int:
    from augkd.distributed.slurm_array import ArrayOptions, submit_generate

    config, _ = _generate_config(args)
    options = ArrayOptions(
        parallel=args.parallel, time=args.time, partition=args.partition, gpus_per_task=args.gpus_per_task,
        cpus_per_task=args.cpus_per_task, mem=args.mem, augkd=args.augkd, template=args.template,
    )
    task_argv = [*_recipe_argv(args), "--out", str(args.out.resolve()), "--quiet"]
    submission = submit_generate(config, args.out, task_argv, options, dry_run=args.dry_run)
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


def _add_recipe_arguments(gen: argparse.ArgumentParser) -> list[argparse.Action]:
    """Flags that decide what a generated dataset holds (not how it is run); returned to rebuild command lines."""
    return [
        gen.add_argument("kind", help="dataset recipe: a config in configs/generate/ (d1M)"),
        gen.add_argument("--systems", type=int, help="number of adsorbate–slab systems"),
        gen.add_argument("--teacher", help="chgnet[:version] (default), sevennet[:model], emt, ase:<module.Class>"),
        gen.add_argument("--teacher-kwargs", help="JSON object of keyword arguments for an ase: teacher"),
        gen.add_argument("--seed", type=int),
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


def _parse_kd(text: str) -> list[dict]:
    """``n2n:100,vanilla1:1`` or ``n2n:auto`` → KD loss terms."""
    terms = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition(":")
        terms.append({"name": name, "lambda": value if value == "auto" else float(value or 1.0)})
    return terms


def _train(args: argparse.Namespace) -> int:
    from augkd.config import compose
    from augkd.train.trainer import TrainConfig, Trainer

    values = compose("train", args.config, list(args.overrides))
    if args.data:
        values["data"]["train"] = [str(p) for p in args.data]
    if args.val:
        values["data"]["val"] = [str(p) for p in args.val]
    for key, value in (("steps", args.steps), ("batch_size", args.batch_size), ("seed", args.seed)):
        if value is not None:
            values[key] = value
    if args.model:
        values["model"]["name"] = args.model
    if args.teacher:
        if args.teacher == "cached":
            values["teacher"]["mode"] = "cached"
        else:
            values["teacher"].update(mode="online", spec=args.teacher)
    if args.kd:
        try:
            values["kd"]["losses"] = _parse_kd(args.kd)
        except ValueError:
            raise AugkdError(f"--kd {args.kd!r}: write name:lambda pairs, e.g. n2n:100,vanilla1:1") from None
    if args.lr is not None:
        values["optim"]["lr"] = args.lr
    trainer = Trainer(TrainConfig.from_dict(values), args.out)
    result = trainer.fit(progress=not args.quiet)
    print(json.dumps({"run": str(args.out), **result}))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from augkd.train.evaluate import evaluate_checkpoints

    print(evaluate_checkpoints(args.checkpoints, args.data, args.batch_size, args.compare, args.json))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from augkd.train.analysis import plot_run

    for path in plot_run(args.run_dir, args.data):
        print(path)
    return 0


def _analyze_cka(args: argparse.Namespace) -> int:
    from augkd.train.analysis import analyze_cka

    print(analyze_cka(args.model_a, args.model_b, args.data, args.out))
    print(f"heat map: {args.out}")
    return 0


def _label(args: argparse.Namespace) -> int:
    from augkd.distributed.label import run_label
    from augkd.generators.label import LabelConfig

    kwargs = _teacher_kwargs(args.teacher_kwargs) if args.teacher_kwargs else {}
    features = tuple(f for f in (args.features or "").replace(" ", "").split(",") if f and f != "atom_energy")
    config = LabelConfig(
        teacher=args.teacher, teacher_kwargs=kwargs, features=features,
        atom_energy="atom_energy" in (args.features or ""), feature_dtype=args.feature_dtype,
    )
    manifest = run_label(args.source, args.out, config, progress=not args.quiet)
    print(f"labelled {manifest['totals']['rows']} rows into {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="augkd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="generate a teacher-labelled synthetic dataset")
    _add_recipe_arguments(gen)
    gen.add_argument("--out", required=True, type=Path, help="dataset directory (created, or resumed)")
    gen.add_argument("--workers", type=int, help="local processes (default 1); dask workers (default: per GPU/core)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.add_argument("--executor", choices=("local", "dask", "slurm-array"), default="local",
                     help="local processes (default), Dask tasks, or one SLURM array task per shard")
    gen.add_argument("--scheduler", help="dask: address of a running scheduler, tcp://host:port")
    gen.add_argument("--cluster", help="dask: start workers as SLURM jobs: slurm (configs/distributed/slurm.yaml) "
                     "or a yaml file with a dask_cluster section")
    gen.add_argument("--shard-index", type=int, help="write only this shard, no manifest (a SLURM array task)")
    gen.add_argument("--resume", action="store_true", help="only finish the dataset already in --out")
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

    slurm = commands.add_parser("slurm", help="run generation as a SLURM job array: submit, status, resubmit")
    slurm_commands = slurm.add_subparsers(dest="slurm_command", required=True)
    submit = slurm_commands.add_parser("submit", help="submit one array task per shard")
    submit_what = submit.add_subparsers(dest="submit_what", required=True)
    submit_gen = submit_what.add_parser("generate", help="the `augkd generate` recipe to run, one task per shard")
    _add_recipe_arguments(submit_gen)
    submit_gen.add_argument("--out", required=True, type=Path, help="dataset directory (plan written now)")
    submit_gen.add_argument("--parallel", type=int, default=64, help="tasks running at once at most (default 64)")
    submit_gen.add_argument("--partition", help="SLURM partition (default: the cluster's default)")
    submit_gen.add_argument("--gpus-per-task", type=int, default=0, help="GPUs per task (default 0)")
    submit_gen.add_argument("--cpus-per-task", type=int, default=1, help="CPUs per task (default 1)")
    submit_gen.add_argument("--mem", help="memory per task, e.g. 16G")
    submit_gen.add_argument("--time", default="04:00:00", help="wall time per task, HH:MM:SS (default 04:00:00)")
    submit_gen.add_argument("--template", help="sbatch template with {{array}}, {{augkd}}, {{generate_args}}")
    submit_gen.add_argument("--augkd", help="command that runs augkd in a task (default: this Python)")
    submit_gen.add_argument("--dry-run", action="store_true", help="print the script, submit nothing")
    submit_gen.add_argument("--quiet", action="store_true", help="accepted as in generate (tasks never show progress)")
    submit_gen.add_argument("overrides", nargs="*", help="hydra-style overrides, e.g. filters.max_abs_force=30")
    submit_gen.set_defaults(run=_slurm_submit)
    status = slurm_commands.add_parser("status", help="per-shard state: complete/missing, plus SLURM's view")
    status.add_argument("path", type=Path)
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_slurm_status)
    again = slurm_commands.add_parser("resubmit", help="submit an array over the missing shards only")
    again.add_argument("path", type=Path)
    again.add_argument("--parallel", type=int, help="tasks at once (default: as submitted)")
    again.add_argument("--dry-run", action="store_true", help="print the script, submit nothing")
    again.set_defaults(run=_slurm_resubmit)

    merge = commands.add_parser("merge", help="verify every shard of a dataset and write its manifest")
    merge.add_argument("path", type=Path)
    merge.set_defaults(run=_merge)
    train = commands.add_parser("train", help="train a student (baseline or KD)")
    train.add_argument("--data", nargs="+", type=Path, help="training dataset directories")
    train.add_argument("--val", nargs="+", type=Path, help="validation dataset directories")
    train.add_argument("--out", required=True, type=Path, help="run directory (resumed if it holds a run)")
    train.add_argument("--config", default="default", help="configs/train/<name>.yaml")
    train.add_argument("--model", help="schnet, painn, painn-small, schnet-tiny, painn-tiny")
    train.add_argument("--teacher", help="'cached' (outputs from `augkd label`) or an online teacher spec")
    train.add_argument("--kd", help="KD losses name:lambda, e.g. n2n:100,vanilla1:1 (lambda 'auto' allowed)")
    train.add_argument("--steps", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--seed", type=int)
    train.add_argument("--quiet", action="store_true")
    train.add_argument("overrides", nargs="*", help="hydra-style overrides, e.g. optim.scheduler=exponential")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="energy/force MAE, force cos, EFwT of model checkpoints")
    evaluate.add_argument("checkpoints", nargs="+", help="model checkpoints, or NAME=PATH pairs")
    evaluate.add_argument("--data", required=True, nargs="+", type=Path)
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--compare", nargs=2, metavar=("STUDENT", "TEACHER"),
                          help="print the paper-style table with gap closed between these two names")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(run=_evaluate)

    plot = commands.add_parser("plot", help="learning curves (and parity plots with --data) of a training run")
    plot.add_argument("run_dir", type=Path, metavar="RUN")
    plot.add_argument("--data", nargs="+", type=Path, help="dataset for parity plots of the best checkpoint")
    plot.set_defaults(run=_plot)

    analyze = commands.add_parser("analyze", help="model analyses")
    analyses = analyze.add_subparsers(dest="analysis", required=True)
    cka = analyses.add_parser("cka", help="linear CKA between the layers of two models over the same atoms")
    cka.add_argument("model_a", type=Path)
    cka.add_argument("model_b", type=Path)
    cka.add_argument("--data", required=True, nargs="+", type=Path)
    cka.add_argument("--out", type=Path, default=Path("cka.png"), help="PNG heat map")
    cka.set_defaults(run=_analyze_cka)

    label = commands.add_parser("label", help="add cached teacher outputs (energy, forces, features) to a dataset")
    label.add_argument("source", type=Path)
    label.add_argument("--teacher", required=True)
    label.add_argument("--teacher-kwargs")
    label.add_argument("--features", help="comma list: atom_energy,node,vector,...")
    label.add_argument("--feature-dtype", default="float16", choices=("float16", "float32"))
    label.add_argument("--out", required=True, type=Path)
    label.add_argument("--quiet", action="store_true")
    label.set_defaults(run=_label)
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
