"""Does distillation pay? A foundation teacher (CHGNet 0.3.0) and CPU-scale students, measured against real DFT.

The DFT set is the GPAW set of ``bench/dft/make_gpaw_set.py`` (``--dft DIR``: any folder with ``train.extxyz`` and
``test.extxyz``, energy + forces, tags, FixAtoms; split by system). Both files are imported with ``augkd import``
(origin ``dft``). Every step drives augkd through its CLI entry point, in process (``augkd.cli.main(argv)``, the
function behind the ``augkd`` command; a subprocess per command would spend ~10 s per call importing torch and
fairchem), one torch thread per process.

Data (``DIR/data/``, each made once, reused on rerun):
  dft-train, dft-test   ``augkd import`` of the two files
  dft-train-t           ``augkd label dft-train --teacher T --features node``: the teacher's node features cached
  synthetic             ``augkd generate d1M --teacher T --elements <the DFT set's elements> origin=synthetic
                        frames.features=[node]``: new adsorbate–slab systems relaxed and labelled by the teacher
  rattle                ``augkd jitter --in dft-train --mode rattle --norm N --copies K --teacher T --features node``
  adv-<student>-s<seed> ``augkd jitter --in dft-train --mode adversarial --student <(a)'s final.pt>``

Students (CPU-trainable sizes; the paper's are PaiNN-small 256×4, cutoff 12, and SchNet 1024/256×5, cutoff 6):
  painn-small  PaiNN, 64 hidden channels, 3 layers, 32 RBFs, cutoff 6 Å, ≤ 30 neighbours, direct forces
  schnet       SchNet, 64 hidden, 64 filters, 3 interactions, 32 Gaussians, cutoff 6 Å, ≤ 30 neighbours, −∇E

Configurations (one run per student × seed; ``DIR/<student>_<setting>/``):
  a-dft               DFT-train only (the baseline of "gap closed")
  b-distill           teacher-made data only (synthetic d1M + rattled copies of DFT-train): pure distillation
  c-mix-a<α>-r<r>     DFT + (synthetic + rattle as one source 'synthetic') through the mixer: ``--alpha-target α
                      --r-sdft r``, for every α:r pair of --mixes
  d-n2n-auto          c at (--kd-alpha, --kd-ratio) + n2n feature KD from the cached teacher node features, λ auto
  d-n2n-l<λ>          the same with the fixed λ of --fixed-lambda
  e-adv               DFT + adversarial jitter rows (against that student's own a-dft model), mixed by size

Per run: trained --steps steps; the final EMA weights (``checkpoints/final.pt``, no checkpoint selection) exported
with ``augkd export`` to ``DIR/<config>/seed<k>/student.pt`` (the first seed's also to ``DIR/<config>/student.pt``);
scored on dft-test with ``augkd evaluate --json`` (raw: energies as the student predicts them) and, for the table,
with the same metric code (``augkd.train.metrics``) on predictions of ``AugkdCalculator(student.pt)`` after a
per-element linear energy reference fitted on dft-train (least squares of E_DFT − E_model over the training
compositions, ``augkd.element_refs.fit_element_references``). The teacher is no augkd checkpoint, so
``augkd evaluate`` cannot score it: its predictions come from its ASE calculator, with the same re-referencing —
this is what makes its (Materials Project-scale) energies comparable with GPAW's, and it is applied to every model
alike. Forces are untouched by references. The learning curves' validation points are on dft-test (monitoring only:
the scored weights are the final ones whatever those points say).

Gap closed (%) per seed: (err_a − err_x)/(err_a − err_teacher)·100 against the same student's a-dft run of the same
seed; mean ± sample std (n − 1) over seeds. MD speed: steps/s of NVT MD (300 K, 1 fs) on bench/md_throughput.py's
66-atom Cu(111)+CO slab, through its functions (``adslab``, ``augkd.student.md.run_md``, ``interleave``), 1 torch
thread, for the teacher's ASE calculator and each student architecture's exported a-dft student (first seed): the cost of a
step does not depend on the weights, so every configuration of a student shares that ratio.

Outputs: ``DIR/results.json`` (every figure), ``DIR/table.md`` (the table in Markdown),
``DIR/plots/learning_curves_<config>.png`` (``augkd plot``, first seed), ``DIR/plots/parity_<best config>.png``
(best = lowest mean force MAE; teacher overlaid). A table and one JSON line on stdout. Rerunning resumes: data sets,
runs (trainer resume), and (config, seed) results whose ``result.json`` exists are skipped.

    python bench/distill_study.py --quick --out runs/distill-quick                   # 1 seed, short schedules
    python bench/distill_study.py --seeds 0,1,2 --out runs/distill                    # the full study
    python bench/distill_study.py --quick --dft /path/to/toy --out /tmp/toy --steps 5 # a toy set
    python bench/distill_study.py --teacher sevennet --out runs/distill-7net          # the second teacher
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import shutil
import sys
import time
from pathlib import Path

sys.modules.setdefault("nvalchemiops", None)
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # this checkout's augkd, not an installed one
sys.path.insert(0, str(BENCH))  # md_throughput, interleave, kd_study

# one mean ± sample std and one table format for both studies
from kd_study import format_stat as cell, markdown_table, mean_std, print_table  # noqa: E402

#: student name → (augkd model preset, overrides): the CPU-trainable sizes of this study
STUDENTS = {
    "painn-small": ("painn-small", {"hidden_channels": 64, "num_layers": 3, "num_rbf": 32, "cutoff": 6.0,
                                    "max_neighbors": 30, "avg_num_neighbors": 30.0}),
    "schnet": ("schnet", {"hidden_channels": 64, "num_filters": 64, "num_interactions": 3, "num_gaussians": 32,
                          "cutoff": 6.0, "max_neighbors": 30, "avg_num_neighbors": 30.0}),
}

#: schedule and data sizes of the two profiles; every entry is also a command-line option
PROFILES = {
    "quick": {"seeds": "0", "steps": 300, "batch_size": 8, "lr": 2e-3, "ema_decay": 0.99, "scheduler": "constant",
              "d1m_systems": 4, "d1m_steps": 30, "d1m_max_atoms": 48, "rattle_copies": 2, "rattle_norm": 0.1,
              "adv_norm": 0.1, "mixes": "0.5:1,0.5:0.3", "md_steps": 10, "md_repeats": 2, "jobs": 2},
    "full": {"seeds": "0,1,2", "steps": 3000, "batch_size": 8, "lr": 1e-3, "ema_decay": 0.999,
             "scheduler": "exponential", "d1m_systems": 40, "d1m_steps": 60, "d1m_max_atoms": 60,
             "rattle_copies": 4, "rattle_norm": 0.1, "adv_norm": 0.1,
             "mixes": "0.25:1,0.5:1,0.75:1,0.25:0.3,0.5:0.3,0.75:0.3", "md_steps": 50, "md_repeats": 3, "jobs": 2},
}
METRICS = ("energy_mae", "force_mae", "force_cos", "efwt")


# -- running augkd -------------------------------------------------------------------------------------------------
def augkd(argv: list[str], log: Path | None = None) -> str:
    """``augkd <argv>`` in this process; its stdout returned (and appended to ``log``); an error if it fails."""
    from augkd.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse errors
            code = exc.code if isinstance(exc.code, int) else 2
    if log is not None:
        with open(log, "a") as handle:
            handle.write(f"$ augkd {' '.join(map(str, argv))}\n{out.getvalue()}{err.getvalue()}\n")
    if code != 0:
        raise RuntimeError(f"augkd {' '.join(map(str, argv))} exited {code}: {err.getvalue().strip()[-2000:]}")
    return out.getvalue()


def have(dataset: Path) -> bool:
    return (dataset / "manifest.json").is_file()


def model_args(student: str) -> list[str]:
    preset, overrides = STUDENTS[student]
    return ["--model", preset, *[f"+model.overrides.{k}={v}" for k, v in overrides.items()]]


# -- data ------------------------------------------------------------------------------------------------------------
def dft_elements(dataset: Path) -> list[str]:
    from ase.data import chemical_symbols

    from augkd.train.data import FrameDataset

    data = FrameDataset([str(dataset)])
    numbers = sorted({int(z) for i in range(len(data)) for z in data.frame(i).atoms.numbers})
    return [chemical_symbols[z] for z in numbers]


def make_data(args, data: Path, log: Path) -> dict:
    """The shared data sets (every one skipped when its manifest exists)."""
    data.mkdir(parents=True, exist_ok=True)
    threads = ["--threads", "1"]
    for split in ("train", "test"):
        if not have(data / f"dft-{split}"):
            augkd(["import", args.dft / f"{split}.extxyz", "--origin", "dft", "--out", data / f"dft-{split}",
                   "--quiet"], log)
    if not have(data / "dft-train-t"):
        augkd(["label", data / "dft-train", "--teacher", args.teacher, "--features", "node", "--out",
               data / "dft-train-t", "--device", "cpu", "--quiet", *threads], log)
    if not have(data / "rattle"):
        augkd(["jitter", "--in", data / "dft-train", "--mode", "rattle", "--norm", args.rattle_norm, "--copies",
               args.rattle_copies, "--teacher", args.teacher, "--features", "node", "--seed", 0, "--out",
               data / "rattle", "--device", "cpu", "--quiet", *threads], log)
    elements = dft_elements(data / "dft-train")
    if args.d1m_systems > 0 and not have(data / "synthetic"):
        augkd(["generate", "d1M", "--teacher", args.teacher, "--elements", ",".join(elements), "--systems",
               args.d1m_systems, "--max-atoms", args.d1m_max_atoms, "--steps", args.d1m_steps,
               "--frames-fraction", 0.3, "--keep-final", "--seed", 0, "--shards", 1, "--device", "cpu",
               "--out", data / "synthetic", "--quiet", *threads, "origin=synthetic", "frames.features=[node]",
               "systems_sampler.max_miller=1"], log)
    return {"elements": elements}


def teacher_made(data: Path) -> list[Path]:
    """The teacher-made data sets: synthetic d1M (when made) and the rattled copies."""
    return [p for p in (data / "synthetic", data / "rattle") if have(p)]


# -- configurations ----------------------------------------------------------------------------------------------------
def settings(args) -> dict[str, dict]:
    """setting name → {description, kind, ...} (the part of a configuration that does not depend on the student)."""
    out = {"a-dft": {"kind": "a", "description": "DFT-train only"},
           "b-distill": {"kind": "b", "description": "teacher-made data only (synthetic d1M + rattled DFT-train)"}}
    for alpha, r in args.mix_list:
        out[f"c-mix-a{alpha:g}-r{r:g}"] = {"kind": "c", "alpha": alpha, "r": r,
                                            "description": f"DFT + teacher-made data, α_target {alpha:g}, r {r:g}"}
    mix = {"alpha": args.kd_alpha, "r": args.kd_ratio}
    out["d-n2n-auto"] = {"kind": "d", **mix, "lambda": "auto",
                         "description": f"c (α {args.kd_alpha:g}, r {args.kd_ratio:g}) + n2n from cached teacher "
                                        f"node features, λ auto"}
    out[f"d-n2n-l{args.fixed_lambda:g}"] = {"kind": "d", **mix, "lambda": args.fixed_lambda,
                                            "description": f"c (α {args.kd_alpha:g}, r {args.kd_ratio:g}) + n2n, "
                                                           f"λ {args.fixed_lambda:g}"}
    out["e-adv"] = {"kind": "e", "description": f"DFT + adversarial jitter rows (norm {args.adv_norm:g} Å, against "
                                                f"the student's own a-dft model), mixed by size"}
    return out


def schedule_args(args, steps: int) -> list[str]:
    every = max(1, steps // 5)
    return ["--steps", steps, "--batch-size", args.batch_size, "--lr", args.lr, "--threads", 1, "--device", "cpu",
            "--quiet", f"eval_every={every}", f"checkpoint_every={every}", f"optim.ema_decay={args.ema_decay}",
            f"optim.scheduler={args.scheduler}"]


def train_argv(args, data: Path, setting: dict, student: str, seed: int, run: Path) -> list[str]:
    kind = setting["kind"]
    made = teacher_made(data)
    if kind == "a":
        sources = ["--data", data / "dft-train"]
    elif kind == "b":
        sources = ["--data", *made]
    elif kind in ("c", "d"):
        dft = data / ("dft-train-t" if kind == "d" else "dft-train")
        sources = ["--data", dft, "--synthetic", *made, "--alpha-target", setting["alpha"], "--r-sdft", setting["r"]]
        if kind == "d":
            sources += ["--teacher", "cached", "--kd", f"n2n:{setting['lambda']}"]
    else:
        sources = ["--data", data / "dft-train", data / f"adv-{student}-s{seed}"]
    return ["train", *sources, "--val", data / "dft-test", *model_args(student), "--seed", seed, "--out", run,
            *schedule_args(args, args.steps)]


# -- scoring -------------------------------------------------------------------------------------------------------------
def load_frames(dataset: Path) -> list:
    from augkd.train.data import FrameDataset

    data = FrameDataset([str(dataset)])
    return [data.frame(i) for i in range(len(data))]


def predict(calculator, frames) -> tuple[list[float], list]:
    import numpy as np

    energies, forces = [], []
    for frame in frames:
        atoms = frame.atoms.copy()
        atoms.calc = calculator
        energies.append(float(atoms.get_potential_energy()))
        forces.append(np.array(atoms.get_forces(apply_constraint=False), dtype=np.float64))
    return energies, forces


def reference_correction(train_frames, train_energies) -> tuple:
    """Per-element offsets (eV/atom, by Z) fitted on E_DFT − E_model over the training rows, and the fit report."""
    from augkd.element_refs import fit_element_references

    numbers = [f.atoms.numbers for f in train_frames]
    delta = [f.energy - e for f, e in zip(train_frames, train_energies)]
    fit = fit_element_references(numbers, delta)
    return fit.refs, {"rows": fit.rows, "rank": fit.rank, "residual_std_eV": round(fit.residual_std, 5)}


def score(frames, energies, forces, refs=None) -> tuple[dict, list[float]]:
    """OC20 S2EF metrics (augkd.train.metrics) of predictions on ``frames``; energies shifted by ``refs`` first."""
    import numpy as np
    import torch

    from augkd.train.metrics import MetricAccumulator

    metrics = MetricAccumulator()
    shifted = []
    for frame, energy, force in zip(frames, energies, forces):
        if refs is not None:
            energy = energy + float(np.sum(refs[frame.atoms.numbers]))
        shifted.append(energy)
        n = len(frame.atoms)
        metrics.update(torch.tensor([energy], dtype=torch.float64), torch.tensor([frame.energy], dtype=torch.float64),
                       torch.as_tensor(force), torch.as_tensor(np.asarray(frame.forces)),
                       torch.zeros(n, dtype=torch.long), torch.as_tensor(~np.asarray(frame.fixed, dtype=bool)))
    return metrics.compute(), shifted


def scored(calculator, train_frames, test_frames) -> tuple[dict, dict, dict]:
    """(referenced metrics, raw metrics, arrays for the parity plot) of a calculator on the DFT test set."""
    import numpy as np

    train_e, _ = predict(calculator, train_frames)
    test_e, test_f = predict(calculator, test_frames)
    refs, fit = reference_correction(train_frames, train_e)
    metrics, shifted = score(test_frames, test_e, test_f, refs)
    raw, _ = score(test_frames, test_e, test_f)
    free = [~np.asarray(f.fixed, dtype=bool) for f in test_frames]
    arrays = {"energy_pred": np.array(shifted), "energy_true": np.array([f.energy for f in test_frames]),
              "natoms": np.array([len(f.atoms) for f in test_frames]),
              "forces_pred": np.concatenate([f[m] for f, m in zip(test_f, free)]),
              "forces_true": np.concatenate([np.asarray(f.forces)[m] for f, m in zip(test_frames, free)])}
    return {**clean(metrics), "energy_reference_fit": fit}, clean(raw), arrays


def clean(metrics: dict) -> dict:
    return {k: (round(float(v), 5) if isinstance(v, float) else v) for k, v in metrics.items()}


def teacher_scores(args, data: Path, folder: Path) -> dict:
    """The teacher's own errors on dft-test (its ASE calculator, re-referenced as the students are)."""
    import numpy as np

    from augkd.teachers import load_teacher

    path = folder / "result.json"
    if path.is_file():
        return json.loads(path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    teacher = load_teacher(args.teacher, device="cpu")
    metrics, raw, arrays = scored(teacher.calculator(), load_frames(data / "dft-train"), load_frames(data / "dft-test"))
    np.savez(folder / "predictions.npz", **arrays)
    result = {"spec": args.teacher, "identity": teacher.identity.to_dict(), "metrics": metrics,
              "metrics_without_reference": raw,
              "how": "teacher's ASE calculator on every dft-test row (augkd evaluate takes augkd checkpoints only); "
                     "energies after per-element linear references fitted on dft-train, as for the students"}
    path.write_text(json.dumps(result, indent=1))
    return result


# -- one run -------------------------------------------------------------------------------------------------------------
def run_unit(unit: dict) -> dict:
    """Train, export and score one (configuration, seed); skipped when its result.json exists."""
    import numpy as np
    import torch

    folder, result_path = Path(unit["folder"]), Path(unit["folder"]) / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    torch.set_num_threads(1)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "log.txt"
    args, data = unit["args"], Path(unit["data"])
    started = time.time()
    if unit["setting"]["kind"] == "e":  # adversarial rows against this student's own DFT-only model
        adv = data / f"adv-{unit['student']}-s{unit['seed']}"
        if not have(adv):
            attacked = Path(unit["baseline_run"]) / "checkpoints" / "final.pt"
            augkd(["jitter", "--in", data / "dft-train", "--mode", "adversarial", "--student", attacked,
                   "--teacher", args.teacher, "--norm", args.adv_norm, "--copies", 1, "--seed", unit["seed"],
                   "--out", adv, "--device", "cpu", "--threads", 1, "--quiet"], log)
    run = folder / "run"
    augkd(train_argv(args, data, unit["setting"], unit["student"], unit["seed"], run), log)
    train_s = time.time() - started
    final = run / "checkpoints" / "final.pt"
    student_pt = folder / "student.pt"
    augkd(["export", final, "--out", student_pt], log)
    try:
        evaluated = json.loads(augkd(["evaluate", f"student={final}", "--data", data / "dft-test", "--json",
                                      "--threads", 1], log))["student"]
    except (RuntimeError, ValueError, KeyError) as exc:  # reported, not fatal: the referenced scores follow
        evaluated = {"error": str(exc)[-500:]}
    from augkd.calculator import AugkdCalculator

    calculator = AugkdCalculator(student_pt, device="cpu", threads=1, warn_unseen=False)
    metrics, raw, arrays = scored(calculator, load_frames(data / "dft-train"), load_frames(data / "dft-test"))
    np.savez(folder / "predictions.npz", **arrays)
    resolved = json.loads((run / "config.json").read_text()).get("resolved", {}) if (run / "config.json").is_file() else {}
    result = {"config": unit["config"], "seed": unit["seed"], "metrics": metrics,
              "metrics_without_reference": raw, "augkd_evaluate": evaluated, "kd_lambdas": resolved.get("kd_lambdas"),
              "run": str(run), "student_pt": str(student_pt), "train_wall_s": round(train_s, 1),
              "parameters": sum(p.numel() for p in calculator.model.parameters())}
    result_path.write_text(json.dumps(result, indent=1))
    return result


def run_all(units: list[dict], jobs: int) -> list[dict]:
    if jobs <= 1 or len(units) <= 1:
        return [run_unit(u) for u in units]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(run_unit, units))


# -- MD speed ------------------------------------------------------------------------------------------------------------
def md_speed(args, students: dict[str, Path], path: Path) -> dict:
    """NVT MD steps/s of the teacher and each student on md_throughput's 66-atom slab, interleaved, 1 thread."""
    if path.is_file():
        return json.loads(path.read_text())
    import torch
    from interleave import interleave
    from md_throughput import SYSTEMS, adslab

    from augkd.calculator import AugkdCalculator
    from augkd.student.md import MDSettings, run_md
    from augkd.teachers import load_teacher

    torch.set_num_threads(1)
    atoms = adslab(SYSTEMS["adslab"])
    calculators = {"teacher": load_teacher(args.teacher, device="cpu").calculator()}
    for name, student_pt in students.items():
        calculators[name] = AugkdCalculator(student_pt, device="cpu", threads=1, warn_unseen=False)
    stability: dict[str, list] = {name: [] for name in calculators}

    def one(name: str):
        def run() -> float:
            settings = MDSettings(ensemble="nvt", temperature_K=300, timestep_fs=1.0, steps=args.md_steps,
                                  interval=10**9, seed=0)
            result = run_md(atoms.copy(), calculators[name], settings)
            stability[name].append(result.reason if not result.stable else None)
            return result.steps_per_s

        return run

    measured = interleave({name: one(name) for name in calculators}, repeats=args.md_repeats)
    teacher = measured.median["teacher"]
    result = {"system": f"bench/md_throughput.py adslab: Cu(111) 4x4x4 + CO, {len(atoms)} atoms", "threads": 1,
              "ensemble": "NVT Langevin 300 K, 1 fs", "steps_per_pass": args.md_steps, "repeats": args.md_repeats,
              "students": {name: str(p) for name, p in students.items()},
              "steps_per_s": {name: round(v, 3) for name, v in measured.median.items()},
              "student_over_teacher": {name: round(measured.median[name] / teacher, 3) for name in students},
              "unstable_passes": {name: [r for r in reasons if r] for name, reasons in stability.items()}}
    path.write_text(json.dumps(result, indent=1))
    return result


# -- aggregation ---------------------------------------------------------------------------------------------------------
def gap(baseline: float, value: float, teacher: float, higher_is_better: bool = False) -> float | None:
    from augkd.train.metrics import gap_closed

    closed = gap_closed(baseline, value, teacher, higher_is_better)
    return None if math.isnan(closed) else round(closed, 2)


def aggregate(configs: dict, results: dict, teacher: dict, md: dict) -> dict:
    """Per configuration: per-seed metrics, mean ± std, gap closed (E, F) against the same student's a-dft."""
    out = {}
    t = teacher["metrics"]
    for name, info in configs.items():
        per_seed = results.get(name, {})
        baseline = results.get(f"{info['student']}_a-dft", {})
        row = {**info, "per_seed": per_seed, "student_pt": info["student_pt"]}
        for metric in METRICS:
            row[metric] = mean_std([r["metrics"][metric] for r in per_seed.values()])
        for short, metric in (("energy", "energy_mae"), ("force", "force_mae")):
            closed = [gap(baseline[s]["metrics"][metric], r["metrics"][metric], t[metric])
                      for s, r in per_seed.items() if s in baseline]
            row[f"gap_closed_{short}_pct"] = {**mean_std(closed), "per_seed": closed}
        row["md_speed_over_teacher"] = md.get("student_over_teacher", {}).get(info["student"])
        out[name] = row
    return out


def targets(table: dict, teacher: dict) -> dict:
    """The issue's foundation-study targets, reached or not, with the numbers."""
    force_t = teacher["metrics"]["force_mae"]
    closing = {n: r["gap_closed_force_pct"]["mean"] for n, r in table.items()
               if r["gap_closed_force_pct"]["mean"] is not None and r["setting"] != "a-dft"}
    best = max(closing, key=closing.get) if closing else None
    pure = {n: r["force_mae"]["mean"] / force_t for n, r in table.items()
            if r["setting"] == "b-distill" and r["force_mae"]["mean"] is not None}
    return {
        "best_force_gap_closed": {"config": best, "pct": closing.get(best),
                                  "md_speed_over_teacher": table[best]["md_speed_over_teacher"] if best else None,
                                  "target": "≥ 50 % of the force-MAE gap with the student ≥ 3x faster in MD",
                                  "reached": bool(best and closing[best] >= 50
                                                  and (table[best]["md_speed_over_teacher"] or 0) >= 3)},
        "pure_distillation_force_mae_over_teacher": {
            "values": {n: round(v, 3) for n, v in pure.items()}, "target": "≤ 1.3",
            "reached": {n: v <= 1.3 for n, v in pure.items()}},
    }


COLUMNS = ("configuration", "E MAE meV", "F MAE meV/Å", "F cos", "EFwT %", "gap E %", "gap F %", "MD ×")


def table_rows(table: dict, teacher: dict) -> list[list[str]]:
    """The results table as text cells: the teacher's row, then one row per configuration (mean ± std over seeds)."""
    t = teacher["metrics"]
    rows = [[f"teacher {teacher['spec']}", f"{t['energy_mae']:.1f}", f"{t['force_mae']:.1f}", f"{t['force_cos']:.3f}",
             f"{t['efwt']:.2f}", "", "", ""]]
    for name, row in table.items():
        speed = row["md_speed_over_teacher"]
        if row["setting"] == "a-dft":  # the baseline: no gap to state
            row = {**row, "gap_closed_energy_pct": {"mean": None}, "gap_closed_force_pct": {"mean": None}}
        rows.append([name, cell(row["energy_mae"], 1), cell(row["force_mae"], 1), cell(row["force_cos"], 3),
                     cell(row["efwt"], 2), cell(row["gap_closed_energy_pct"], 1), cell(row["gap_closed_force_pct"], 1),
                     f"{speed:.1f}" if speed else "–"])
    return rows


def parity_plot(path: Path, student: Path, teacher: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    s, t = np.load(student), np.load(teacher)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for label, arrays, colour in (("teacher", t, "tab:grey"), ("student", s, "tab:blue")):
        axes[0].scatter(arrays["energy_true"] / arrays["natoms"], arrays["energy_pred"] / arrays["natoms"], s=12,
                        alpha=0.7, label=label, color=colour)
        axes[1].scatter(arrays["forces_true"].ravel(), arrays["forces_pred"].ravel(), s=4, alpha=0.5, label=label,
                        color=colour)
    for axis, (what, note) in zip(axes, (("energy per atom (eV)", " (referenced on dft-train)"),
                                         ("force components on free atoms (eV/Å)", ""))):
        (x0, x1), (y0, y1) = axis.get_xlim(), axis.get_ylim()
        lo, hi = min(x0, y0), max(x1, y1)
        axis.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        axis.set(xlabel=f"DFT {what}", ylabel=f"model {what}{note}")
        axis.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- main ------------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="study directory (resumed when it holds one)")
    parser.add_argument("--quick", action="store_true", help="one seed, short schedules, small teacher-made data")
    parser.add_argument("--dft", type=Path, default=BENCH / "data" / "gpaw_dft",
                        help="folder with train.extxyz and test.extxyz (default: bench/data/gpaw_dft)")
    parser.add_argument("--teacher", default="chgnet", help="teacher spec (default chgnet = CHGNet 0.3.0; sevennet)")
    parser.add_argument("--students", default=",".join(STUDENTS), help=f"subset of {','.join(STUDENTS)}")
    parser.add_argument("--seeds", help="comma list (quick: 0; full: 0,1,2)")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (quick 300, full 3000)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--ema-decay", type=float)
    parser.add_argument("--scheduler", help="constant | exponential | step | plateau")
    parser.add_argument("--d1m-systems", type=int, help="systems the teacher relaxes for d1M (0: rattle only)")
    parser.add_argument("--d1m-steps", type=int, help="relaxation steps per d1M system")
    parser.add_argument("--d1m-max-atoms", type=int)
    parser.add_argument("--rattle-copies", type=int, help="rattled copies of every DFT-train row")
    parser.add_argument("--rattle-norm", type=float, help="Å every free atom moves in a rattled copy")
    parser.add_argument("--adv-norm", type=float, help="Å of the adversarial displacement")
    parser.add_argument("--mixes", help="(α_target, r_s/dft) pairs of c, comma list of α:r, e.g. 0.25:1,0.5:0.3")
    parser.add_argument("--kd-alpha", type=float, default=0.5, help="α_target of the d runs (default 0.5)")
    parser.add_argument("--kd-ratio", type=float, default=1.0, help="r_s/dft of the d runs (default 1)")
    parser.add_argument("--fixed-lambda", type=float, default=100.0,
                        help="λ of the fixed-λ n2n run (default 100: Table 8's PaiNN→PaiNN-small n2n)")
    parser.add_argument("--md-steps", type=int, help="MD steps per timed pass")
    parser.add_argument("--md-repeats", type=int, help="interleaved MD rounds")
    parser.add_argument("--jobs", type=int, help="runs in parallel, one process and one torch thread each")
    args = parser.parse_args(argv)
    for key, value in PROFILES["quick" if args.quick else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.seed_list = [int(s) for s in str(args.seeds).split(",") if s != ""]
    def mix_pair(text: str) -> tuple[float, float]:
        alpha, r = text.split(":")  # ValueError unless exactly one ':'
        return float(alpha), float(r)

    try:
        args.mix_list = [mix_pair(pair) for pair in str(args.mixes).split(",") if pair]
    except ValueError:
        parser.error(f"--mixes {args.mixes}: expected α:r pairs, e.g. 0.25:1,0.5:0.3")
    args.student_list = [s for s in args.students.split(",") if s]
    unknown = set(args.student_list) - set(STUDENTS)
    if unknown:
        parser.error(f"--students from {','.join(STUDENTS)}; got {sorted(unknown)}")
    for split in ("train", "test"):
        if not (args.dft / f"{split}.extxyz").is_file():
            parser.error(f"--dft {args.dft} has no {split}.extxyz (bench/dft/make_gpaw_set.py --assemble-only "
                         f"writes them)")
    args.dft = args.dft.resolve()
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.time()
    out = args.out.resolve()
    data = out / "data"
    out.mkdir(parents=True, exist_ok=True)
    setup = make_data(args, data, out / "data-log.txt")
    teacher = teacher_scores(args, data, out / "teacher")

    configs, units = {}, {"first": [], "second": []}
    for student in args.student_list:
        for setting_name, setting in settings(args).items():
            name = f"{student}_{setting_name}"
            configs[name] = {"student": student, "setting": setting_name, "description": setting["description"],
                             "student_pt": str(out / name / "student.pt")}
            for seed in args.seed_list:
                units["second" if setting["kind"] == "e" else "first"].append({
                    "config": name, "student": student, "seed": seed, "setting": setting,
                    "folder": str(out / name / f"seed{seed}"), "data": str(data), "args": args,
                    "baseline_run": str(out / f"{student}_a-dft" / f"seed{seed}" / "run")})
    results: dict[str, dict] = {}
    for stage in ("first", "second"):
        for unit, result in zip(units[stage], run_all(units[stage], args.jobs)):
            results.setdefault(unit["config"], {})[str(unit["seed"])] = result
    for name in configs:  # the configuration's student: its first seed's
        first = out / name / f"seed{args.seed_list[0]}" / "student.pt"
        if first.is_file():
            shutil.copyfile(first, out / name / "student.pt")

    md = md_speed(args, {s: out / f"{s}_a-dft" / "student.pt" for s in args.student_list}, out / "md.json")
    table = aggregate(configs, results, teacher, md)

    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    figures = []
    for name in configs:
        run = out / name / f"seed{args.seed_list[0]}" / "run"
        if (plots / f"learning_curves_{name}.png").is_file():
            figures.append(str(plots / f"learning_curves_{name}.png"))
            continue
        try:
            augkd(["plot", run, "--threads", 1], out / "plot-log.txt")
            shutil.copyfile(run / "learning_curves.png", plots / f"learning_curves_{name}.png")
            figures.append(str(plots / f"learning_curves_{name}.png"))
        except (RuntimeError, OSError) as exc:
            print(f"no learning curves for {name}: {exc}", file=sys.stderr)
    ranked = [n for n in table if table[n]["force_mae"]["mean"] is not None]
    best = min(ranked, key=lambda n: table[n]["force_mae"]["mean"]) if ranked else None
    if best:
        figures.append(str(parity_plot(plots / f"parity_{best}.png",
                                       out / best / f"seed{args.seed_list[0]}" / "predictions.npz",
                                       out / "teacher" / "predictions.npz",
                                       f"{best} (seed {args.seed_list[0]}) and teacher {args.teacher} on the DFT test set")))

    sizes = {}
    for name in ("dft-train", "dft-test", "dft-train-t", "synthetic", "rattle"):
        if have(data / name):
            sizes[name] = json.loads((data / name / "manifest.json").read_text()).get("totals", {}).get("rows")
    for adv in sorted(data.glob("adv-*")):
        if have(adv):
            sizes[adv.name] = json.loads((adv / "manifest.json").read_text()).get("totals", {}).get("rows")
    schedule = {k: getattr(args, k) for k in PROFILES["full"]}
    result = {
        "study": "distill_study", "profile": "quick" if args.quick else "full", "dft": str(args.dft),
        "seeds": args.seed_list, "schedule": schedule, "kd": {"alpha": args.kd_alpha, "r": args.kd_ratio,
                                                              "fixed_lambda": args.fixed_lambda},
        "students": {s: {"preset": STUDENTS[s][0], "overrides": STUDENTS[s][1],
                         "parameters": next((r["parameters"] for c, rs in results.items() if c.startswith(s + "_")
                                             for r in rs.values()), None)} for s in args.student_list},
        "teacher": teacher, "data": {"rows": sizes, "elements": setup["elements"]},
        "energy_metric": "E MAE after per-element linear references fitted on dft-train (E_DFT − E_model), the same "
                         "for the teacher and every student; raw values under metrics_without_reference and "
                         "augkd_evaluate",
        "gap_closed": "(err_a − err_x)/(err_a − err_teacher)·100 per seed, a = the same student's a-dft run",
        "md": md, "configurations": table, "best_configuration": {"config": best, "by": "lowest mean force MAE"},
        "targets": targets(table, teacher), "plots": figures, "wall_s": round(time.time() - started, 1),
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    rows = table_rows(table, teacher)
    (out / "table.md").write_text(markdown_table(rows, COLUMNS))
    print_table(rows, COLUMNS, first=34, width=16)
    print(json.dumps({"study": "distill_study", "results": str(out / "results.json"), "best": best,
                      "targets": result["targets"], "wall_s": result["wall_s"]}))
    return result


if __name__ == "__main__":
    main()
