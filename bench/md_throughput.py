"""MD throughput of students against their teacher, in the job a student is for: ASE molecular dynamics.

Prints ONE JSON line on stdout:
- ``steps_per_s[model][system][threads]``: NVT (Langevin, 300 K, 1 fs) MD steps per second through augkd's MD
  runner (``augkd.student.md.run_md``: stability checks included) on a Cu(111) 4×4×4 slab + CO (66 atoms, the
  ~60-atom adsorbate–slab) and a Cu(111) 10×10×10 slab + CO (1002 atoms), with 1 torch thread and with all the
  threads this process may use (``augkd.threads``). Models: the teacher CHGNet 0.3.0 (``load_teacher("chgnet")``),
  PaiNN-small (256×4, cutoff 12 Å, direct forces) and SchNet (1024 hidden, 5 interactions) students at paper
  size, the CPU-scale students of the studies (``bench/kd_study.py``: PaiNN 16×2, −∇E; SchNet tiny preset), and
  EMT as the floor. Students are exported ``student.pt`` files run by ``AugkdCalculator`` (TorchScript, float32,
  Verlet-skin neighbour list); their weights are random with the energy (and force) scale set small, which leaves
  the cost of a step unchanged and keeps 300 K MD stable.
- ``student_over_teacher``: steps/s ratios to CHGNet per system and thread count (targets on a 2-core CPU: paper
  PaiNN-small ≥ 3, SchNet ≥ 10); ``cost_per_atom_1002_over_66``: (s/step/atom at 1002 atoms) ÷ (at 66) (target ≤
  1.3); ``ms_per_step`` of students: neighbour list, model, and the rest (ASE integrator, stability checks);
  ``overhead_fraction`` = (neighbour list + rest) ÷ step (target ≤ 0.2).
- ``nve_drift``: NVE (velocity Verlet, 1 fs, from 300 K) of a trained conservative tiny student (PaiNN 32×2, −∇E,
  no neighbour limit) over ``--drift-ps`` ps on the 66-atom slab: least-squares energy drift in meV/atom/ps and the
  largest deviation of the total energy from its start (meV/atom). The student is trained here on EMT data (24 d1M
  systems) for ``--drift-train-steps`` steps, or given with ``--student PATH``.

Passes are interleaved (bench/interleave.py): one warm-up pass of every variant, then ``--repeats`` rounds of one
pass each; figures are medians. The machine may be shared: the load average at the start is in ``machine``.

    python bench/md_throughput.py [--steps 10] [--repeats 3] [--systems adslab,slab] [--models chgnet,...]
                                  [--threads 1,all] [--drift-ps 2] [--drift-train-steps 1500] [--student PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.modules.setdefault("nvalchemiops", None)
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from interleave import interleave  # noqa: E402

#: name → (registry preset, overrides); "paper" sizes are the presets, "cpu" the studies' sizes
STUDENTS = {
    "painn-small": ("painn-small", {}),
    "schnet": ("schnet", {}),
    "painn-cpu": ("painn-tiny", {"hidden_channels": 16, "num_layers": 2, "direct_forces": False}),
    "schnet-cpu": ("schnet-tiny", {}),
}
TEACHER = "chgnet"
FLOOR = "emt"
MODELS = (TEACHER, *STUDENTS, FLOOR)
SYSTEMS = {"adslab": (4, 4, 4), "slab": (10, 10, 10)}


def adslab(size: tuple[int, int, int]):
    """A Cu(111) slab with CO on top, the bottom two layers fixed, pbc (T, T, F), rattled by 0.03 Å."""
    from ase.build import add_adsorbate, fcc111, molecule
    from ase.constraints import FixAtoms

    atoms = fcc111("Cu", size=size, vacuum=10.0)
    z = atoms.positions[:, 2]
    layers = np.unique(np.round(z, 3))
    add_adsorbate(atoms, molecule("CO")[::-1], 1.9, "ontop")  # C down
    atoms.set_constraint(FixAtoms(indices=np.flatnonzero(np.round(z, 3) <= layers[1])))
    atoms.rattle(0.03, seed=0)
    return atoms


def student_file(name: str, folder: Path) -> Path:
    """An exported student of ``name`` with random weights, its energy/force scales set small (0.01)."""
    from augkd.models import build_model, save_model
    from augkd.student.export import export_student

    preset, overrides = STUDENTS[name]
    torch.manual_seed(0)
    model = build_model(preset, **overrides)
    model.fit_energy_normalizer(-3.0, 0.01, 0.01)
    checkpoint = save_model(folder / f"{name}.ckpt", model, {"species": [1, 6, 7, 8, 29, 78]})
    return export_student(checkpoint, folder / f"{name}.pt")


def calculator_factory(name: str, folder: Path):
    """A function (threads, system) → an ASE calculator of ``name``, built once per pair: one calculator per
    simulation, as a user runs them (a calculator shared between systems would rebuild its neighbour list at every
    switch, a cost real MD pays only when atoms have moved half a skin)."""
    from augkd.calculator import AugkdCalculator
    from augkd.teachers import load_teacher

    cache = {}
    path = student_file(name, folder) if name in STUDENTS else None

    def make(threads: int, system: str):
        if (threads, system) not in cache:
            if path is not None:
                cache[threads, system] = AugkdCalculator(path, device="cpu", threads=threads)
            else:
                cache[threads, system] = load_teacher(name, device="cpu").calculator()
        return cache[threads, system]

    return make


def train_drift_student(folder: Path, steps: int) -> Path:
    """A conservative painn-tiny (−∇E, no neighbour limit) trained on EMT d1M data, exported."""
    from augkd.cli import main as augkd

    data, run = folder / "emt", folder / "drift-run"
    recipe = ["generate", "d1M", "--out", str(data), "--systems", "24", "--shards", "2", "--teacher", "emt",
              "--elements", "Cu,Pt,O,H,C,N", "--max-atoms", "70", "--steps", "40", "--fmax", "0.1",
              "--frames-fraction", "0.5", "--keep-final", "--seed", "3", "--quiet", "systems_sampler.max_miller=1",
              "filters.drop_anomalies=[desorbed,intercalated]"]
    with contextlib.redirect_stdout(io.StringIO()):
        if augkd(recipe) != 0:
            raise SystemExit("generating the EMT data failed")
        train = ["train", "--data", str(data), "--model", "painn-tiny", "--steps", str(steps), "--batch-size", "4",
                 "--lr", "3e-3", "--out", str(run), "--quiet", "+model.overrides.direct_forces=false",
                 "+model.overrides.max_neighbors=1000"]
        if augkd(train) != 0 or augkd(["export", str(run), "--out", str(folder / "drift.pt")]) != 0:
            raise SystemExit("training the drift student failed")
    return folder / "drift.pt"


def nve_drift(student: Path, picoseconds: float, threads: int, label: str) -> dict:
    from augkd.calculator import AugkdCalculator
    from augkd.student.md import MDSettings, run_md

    atoms = adslab(SYSTEMS["adslab"])
    calculator = AugkdCalculator(student, device="cpu", threads=threads)
    steps = int(round(picoseconds * 1000))
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "nve.csv"
        result = run_md(atoms, calculator, MDSettings(ensemble="nve", temperature_K=300, timestep_fs=1.0,
                                                      steps=steps, interval=1, seed=0), log=log)
        table = np.genfromtxt(log, delimiter=",", names=True)
    total = np.atleast_1d(table["etot_eV"]) / len(atoms)
    return {
        "student": label, "atoms": len(atoms), "ps": result.time_fs / 1000, "timestep_fs": 1.0,
        "stable": result.stable, "reason": result.reason, "drift_meV_per_atom_per_ps": round(result.drift_mev_per_atom_ps or 0.0, 5),
        "max_deviation_meV_per_atom": round(float(np.abs(total - total[0]).max() * 1000), 5),
        "mean_temperature_K": round(float(np.mean(table["temperature_K"])), 1),
        "neighbor_builds": calculator.neighbors.builds, "steps_per_s": round(result.steps_per_s, 2),
    }


def main() -> None:
    from augkd.student.md import MDSettings, run_md
    from augkd.threads import resolve_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed MD steps per pass")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (after one warm-up round)")
    parser.add_argument("--systems", default="adslab,slab", help="adslab (66 atoms), slab (1002 atoms)")
    parser.add_argument("--models", default=",".join(MODELS), help="subset of " + ",".join(MODELS))
    parser.add_argument("--threads", default="1,all", help="torch thread counts; 'all' = augkd.threads' default")
    parser.add_argument("--drift-ps", type=float, default=2.0, help="NVE length for the drift figure (0: skip)")
    parser.add_argument("--drift-train-steps", type=int, default=1500)
    parser.add_argument("--student", type=Path, help="a trained conservative student for the drift figure")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    systems = [s for s in args.systems.split(",") if s]
    if set(models) - set(MODELS) or set(systems) - set(SYSTEMS):
        parser.error(f"--models from {','.join(MODELS)}; --systems from {','.join(SYSTEMS)}")
    everything = resolve_threads()
    threads = sorted({everything if t == "all" else int(t) for t in args.threads.split(",") if t})
    load = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        factories = {name: calculator_factory(name, folder) for name in models}
        structures = {name: adslab(SYSTEMS[name]) for name in systems}
        splits: dict[str, list[dict]] = {}

        def one_pass(model: str, system: str, count: int):
            def run() -> float:
                torch.set_num_threads(count)
                calculator = factories[model](count, system)
                settings = MDSettings(ensemble="nvt", temperature_K=300, timestep_fs=1.0, steps=args.steps,
                                      interval=10**9, seed=0)
                result = run_md(structures[system].copy(), calculator, settings)
                if not result.stable:
                    raise SystemExit(f"{model} on {system} became unstable: {result.reason}")
                splits.setdefault(f"{model}/{system}/{count}", []).append(result.time_split_ms)
                return result.steps_per_s

            return run

        variants = {f"{m}/{s}/{t}": one_pass(m, s, t) for s in systems for t in threads for m in models}
        measured = interleave(variants, repeats=args.repeats)

        drift = None
        if args.drift_ps > 0:
            student = args.student or train_drift_student(folder, args.drift_train_steps)
            label = str(args.student) if args.student else (
                f"painn-tiny (32x2, -gradE, no neighbour limit) trained here for {args.drift_train_steps} steps on EMT")
            drift = nve_drift(student, args.drift_ps, threads[0], label)

    def table(values: dict[str, float], digits: int = 3) -> dict:
        out: dict = {}
        for key, value in values.items():
            model, system, count = key.split("/")
            out.setdefault(model, {}).setdefault(system, {})[count] = round(value, digits)
        return out

    rate = measured.median
    ratios, per_atom, split, overhead = {}, {}, {}, {}
    for key, value in rate.items():
        model, system, count = key.split("/")
        teacher = f"{TEACHER}/{system}/{count}"
        if model in STUDENTS and teacher in rate:
            ratios[key] = value / rate[teacher]
        if system == "slab" and f"{model}/adslab/{count}" in rate:
            atoms = {s: len(structures[s]) for s in structures}
            per_atom[f"{model}/-/{count}"] = (1 / value / atoms["slab"]) / (1 / rate[f"{model}/adslab/{count}"]
                                                                             / atoms["adslab"])
        if model in STUDENTS:
            parts = {name: statistics.median(s[name] for s in splits[key]) for name in ("neighbors", "model", "rest")}
            split[key] = parts
            overhead[key] = (parts["neighbors"] + parts["rest"]) / sum(parts.values())
    result = {
        "bench": "md_throughput",
        "machine": {"cpus": everything, "loadavg_1min_at_start": round(load, 2), "torch": torch.__version__},
        "systems": {name: len(atoms) for name, atoms in structures.items()},
        "steps_per_pass": args.steps, "repeats": args.repeats,
        "steps_per_s": table(rate),
        "student_over_teacher": table(ratios, 2),
        "cost_per_atom_1002_over_66": {k.split("/")[0] + "/" + k.split("/")[2]: round(v, 3)
                                       for k, v in per_atom.items()},
        "ms_per_step": {k: {n: round(v, 2) for n, v in parts.items()} for k, parts in split.items()},
        "overhead_fraction": {k: round(v, 3) for k, v in overhead.items()},
        "nve_drift": drift,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
