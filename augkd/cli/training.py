"""Training and judging students: train, evaluate, plot, analyze."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from augkd.cli.common import DEVICE_HELP, add_threads_argument
from augkd.errors import AugkdError
from augkd.vocabulary import kd_help, teacher_help


def _parse_kd(text: str) -> list[dict]:
    """``n2n:100,vanilla1:1`` or ``n2n:auto`` → KD loss terms."""
    terms = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition(":")
        terms.append({"name": name, "lambda": value if value == "auto" else float(value or 1.0)})
    return terms


def _paths(paths: list[Path] | None) -> list[str] | None:
    return [str(p) for p in paths] if paths else None


def _train(args: argparse.Namespace) -> int:
    from augkd.config import apply_flags, compose_over_default
    from augkd.mixers import parse_source
    from augkd.mixers.config import parse_weight_ratios
    from augkd.threads import set_threads
    from augkd.train.trainer import TrainConfig, Trainer

    set_threads(args.threads, processes=_local_ranks())
    values = compose_over_default("train", args.config, list(args.overrides))
    flags = {
        "device": args.device or None,
        "data.train": _paths(args.data),
        "data.synthetic": _paths(args.synthetic),
        "data.sources": [parse_source(text) for text in args.source] if args.source else None,
        "data.val": _paths(args.val),
        "mixer.alpha_target": args.alpha_target,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "model.name": args.model or None,
        "optim.lr": args.lr,
    }
    if args.init_from:
        from augkd.train.init import checkpoint_model

        flags["init.checkpoint"] = str(args.init_from.resolve())
        flags["init.normalizer"] = bool(args.init_normalizer)
        if not args.model:  # the model of the checkpoint, unless another one is asked for (and then refused)
            flags["model.name"], flags["model.overrides"] = checkpoint_model(args.init_from)
    if args.r_sdft is not None:
        r, ratios = parse_weight_ratios(args.r_sdft)
        flags["mixer.r_sdft"] = r
        flags["mixer.weight_ratios"] = {**values["mixer"]["weight_ratios"], **ratios}
    if args.teacher == "cached":
        flags["teacher.mode"] = "cached"
    elif args.teacher:
        flags["teacher.mode"], flags["teacher.spec"] = "online", args.teacher
    if args.kd:
        try:
            flags["kd.losses"] = _parse_kd(args.kd)
        except ValueError:
            raise AugkdError(f"--kd {args.kd!r}: write name:lambda pairs, e.g. n2n:100,vanilla1:1") from None
    trainer = Trainer(TrainConfig.from_dict(apply_flags(values, flags)), args.out)
    result = trainer.fit(progress=not args.quiet)
    print(json.dumps({"run": str(args.out), **result}))
    return 0


def _local_ranks() -> int:
    """Training processes on this host: torchrun's LOCAL_WORLD_SIZE, else 1."""
    import os

    return int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)


def _evaluate(args: argparse.Namespace) -> int:
    from augkd.threads import set_threads
    from augkd.train.evaluate import evaluate_checkpoints

    set_threads(args.threads)
    print(evaluate_checkpoints(args.checkpoints, args.data, args.batch_size, args.compare, args.json))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from augkd.threads import set_threads
    from augkd.train.analysis import plot_run

    set_threads(args.threads)
    for path in plot_run(args.run_dir, args.data):
        print(path)
    return 0


def _analyze_cka(args: argparse.Namespace) -> int:
    from augkd.threads import set_threads
    from augkd.train.analysis import analyze_cka

    set_threads(args.threads)
    print(analyze_cka(args.model_a, args.model_b, args.data, args.out))
    print(f"heat map: {args.out}")
    return 0


def register(commands) -> None:
    train = commands.add_parser("train", help="train a student (baseline or KD)")
    train.add_argument("--data", nargs="+", type=Path,
                       help="training dataset directories (one source per origin their manifests record)")
    train.add_argument("--synthetic", nargs="+", type=Path, help="a second source, origin 'synthetic'")
    train.add_argument("--source", action="append", metavar="[ORIGIN=]DIR[:ALPHA]",
                       help="one source of the mixture (repeat for N sources), e.g. rattle=data/rattle:0.2")
    train.add_argument("--alpha-target", type=float,
                       help="share of draws from the non-dft source (two sources; default: by size)")
    train.add_argument("--r-sdft", metavar="R|ORIGIN=R,...",
                       help="loss-weight ratio to dft samples of the other origins (default 1: unweighted)")
    train.add_argument("--val", nargs="+", type=Path, help="validation dataset directories")
    train.add_argument("--out", required=True, type=Path, help="run directory (resumed if it holds a run)")
    train.add_argument("--config", default="default",
                       help="a yaml file, or a name under configs/train/ (e.g. paper/painn_oc20); it may hold only the "
                       "keys it changes from configs/train/default.yaml")
    train.add_argument("--model", help="schnet, painn, painn-small, gemnet-oc, gemnet-oc-small, schnet-tiny, painn-tiny, "
                       "gemnet-oc-tiny (default painn-small, or the --init-from checkpoint's model)")
    train.add_argument("--init-from", type=Path, metavar="CKPT",
                       help="fine-tune: start from the weights of an augkd checkpoint (a run's last.pt gives its EMA)")
    train.add_argument("--init-normalizer", action="store_true",
                       help="with --init-from: keep its energy/force normaliser instead of fitting one on --data")
    train.add_argument("--teacher", help=teacher_help("'cached' (outputs stored by `augkd label`) or an online teacher: "))
    train.add_argument("--kd", help=kd_help())
    train.add_argument("--steps", type=int, help="optimizer steps in all (more than a finished run's: it continues)")
    train.add_argument("--batch-size", type=int, help="structures per step (default 8)")
    train.add_argument("--lr", type=float, help="peak learning rate (default 1e-4)")
    train.add_argument("--seed", type=int, help="seed of weights, data order and mixing (default 0)")
    train.add_argument("--device", help=DEVICE_HELP)
    add_threads_argument(train)
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("overrides", nargs="*", help="hydra-style overrides, e.g. optim.scheduler=exponential")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="energy/force MAE, force cos, EFwT of model checkpoints")
    evaluate.add_argument("checkpoints", nargs="+", help="model checkpoints, or NAME=PATH pairs")
    evaluate.add_argument("--data", required=True, nargs="+", type=Path,
                          help="dataset directories to score on (energies against their own references)")
    evaluate.add_argument("--batch-size", type=int, default=8, help="structures per model call (default 8)")
    add_threads_argument(evaluate)
    evaluate.add_argument("--compare", nargs=2, metavar=("STUDENT", "TEACHER"),
                          help="print the paper-style table with gap closed between these two names")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(run=_evaluate)

    plot = commands.add_parser("plot", help="learning curves (and parity plots with --data) of a training run")
    plot.add_argument("run_dir", type=Path, metavar="RUN", help="training run directory")
    plot.add_argument("--data", nargs="+", type=Path, help="dataset for parity plots of the best checkpoint")
    add_threads_argument(plot)
    plot.set_defaults(run=_plot)

    analyze = commands.add_parser("analyze", help="model analyses")
    analyses = analyze.add_subparsers(dest="analysis", required=True)
    cka = analyses.add_parser("cka", help="linear CKA between the layers of two models over the same atoms")
    cka.add_argument("model_a", type=Path, help="first model checkpoint (rows of the heat map)")
    cka.add_argument("model_b", type=Path, help="second model checkpoint (columns)")
    cka.add_argument("--data", required=True, nargs="+", type=Path, help="dataset whose atoms both models see")
    add_threads_argument(cka)
    cka.add_argument("--out", type=Path, default=Path("cka.png"), help="PNG heat map")
    cka.set_defaults(run=_analyze_cka)

