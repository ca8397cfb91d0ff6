"""MD stability of students and their teacher: how long NVT runs last before they become unstable.

Prints ONE JSON line on stdout: for every model (``--models``: student files — exported ``student.pt``,
checkpoints, run directories — and teacher specs such as ``chgnet``, ``sevennet``, ``emt``), temperature
(``--temperatures``, default 300 and 600 K) and seed (``--seeds``), the simulated time reached (ps) by NVT MD
(Langevin, friction 0.01/fs, ``--timestep`` fs) of ``--ps`` ps on a Cu(111) 4×4×4 slab + CO (66 atoms, bottom two
layers fixed), whether it reached the full length, and why it stopped otherwise (``augkd.student.stability``:
an interatomic distance < 0.5 Å or a force > 50 eV/Å, or non-finite numbers); per model and temperature the
fraction of stable runs and the median time reached. Runs are interleaved (model by model within each
temperature and seed), so that a slow phase of a shared machine does not fall on one model only.

    python bench/md_stability.py --models chgnet,runs/kd/student.pt,runs/base/student.pt [--ps 2] [--seeds 0,1,2]
        [--temperatures 300,600] [--timestep 1] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from pathlib import Path

sys.modules.setdefault("nvalchemiops", None)
sys.path.insert(0, str(Path(__file__).parent))

from md_throughput import SYSTEMS, adslab  # noqa: E402


def main() -> None:
    from augkd.student.inputs import check_species, load_simulation_model
    from augkd.student.md import MDSettings, run_md

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="emt", help="comma-separated student paths and teacher specs")
    parser.add_argument("--ps", type=float, default=2.0, help="length of each run, ps")
    parser.add_argument("--timestep", type=float, default=1.0, help="fs")
    parser.add_argument("--temperatures", default="300,600", help="K, comma-separated")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (velocities and thermostat noise)")
    parser.add_argument("--threads", type=int, help="torch threads (default: augkd.threads)")
    args = parser.parse_args()
    specs = [m for m in args.models.split(",") if m]
    temperatures = [float(t) for t in args.temperatures.split(",") if t]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    steps = int(round(args.ps * 1000 / args.timestep))
    structure = adslab(SYSTEMS["adslab"])

    models = {}
    for spec in specs:
        model = load_simulation_model(spec, device="cpu", threads=args.threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_species(model, structure, allow_unseen=True)  # measured anyway; the JSON says which elements
        models[spec] = model

    runs = []
    for temperature in temperatures:
        for seed in seeds:
            for spec, model in models.items():
                settings = MDSettings(ensemble="nvt", temperature_K=temperature, timestep_fs=args.timestep,
                                      steps=steps, seed=seed, interval=10**9)
                result = run_md(structure.copy(), model.calculator, settings)
                runs.append({"model": spec, "temperature_K": temperature, "seed": seed,
                             "time_ps": round(result.time_fs / 1000, 4), "stable": result.stable,
                             "reason": result.reason, "steps_per_s": round(result.steps_per_s, 2)})
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)

    summary = {}
    for spec in specs:
        for temperature in temperatures:
            mine = [r for r in runs if r["model"] == spec and r["temperature_K"] == temperature]
            summary.setdefault(spec, {})[f"{temperature:g}K"] = {
                "stable_fraction": round(sum(r["stable"] for r in mine) / len(mine), 3),
                "median_time_ps": statistics.median(r["time_ps"] for r in mine),
                "min_time_ps": min(r["time_ps"] for r in mine),
            }
    print(json.dumps({
        "bench": "md_stability", "atoms": len(structure), "ps": args.ps, "timestep_fs": args.timestep,
        "thermostat": "langevin 0.01/fs", "seeds": seeds, "summary": summary,
        "models": {spec: {"name": model.name, "conservative": model.conservative,
                          "species": None if model.species is None else sorted(model.species)}
                   for spec, model in models.items()},
        "runs": runs,
    }))


if __name__ == "__main__":
    main()
