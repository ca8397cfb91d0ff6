"""Relaxation throughput: ASE's FIRE one system at a time vs the batched relaxer, same teacher, same systems.

Prints ONE JSON line on stdout: for each teacher, frames/s of both paths (a frame = one visited geometry with its
teacher energy and forces), their ratio, and what the batched run did (forward passes, largest batch). Both paths
run ASE's FIRE semantics (ase.optimize.FIRE vs augkd.generators.fire) with the same fmax and per-system step limits.

Teachers (``--teachers``):
- ``painn`` (or any other registry name, e.g. ``painn-small``): our PaiNN at the paper's OC20 size (512 channels,
  6 layers, cutoff 12 Å, 50 neighbours, direct forces), random weights with the normaliser fitted to EMT labels of
  the systems, saved and loaded as a ``ckpt:`` teacher (what ``augkd generate`` would load).
- ``chgnet``: CHGNet 0.3.0 from its wheel (its adapter predicts on a batch). The ASE path uses its ASE calculator,
  as ``augkd generate --relaxer ase`` does; that calculator also computes stress and magnetic moments (CHGNet's
  task "efsm"), which the batched path does not, so a second ASE reference with a forces-only calculator (task
  "ef") is timed too, and the ratio against it isolates what batching itself gains.
Systems: OC20-like adslabs of 30–80 atoms (fcc111 slabs of EMT metals with a small adsorbate, bottom layers fixed,
pbc (T, T, F)). A random network's forces never converge, so per-system step limits spread between ``steps/2``
and ``steps`` stand in for systems converging at different times (the in-flight batch refills as they leave).
Per teacher the paths run interleaved (bench/interleave.py): one untimed warm-up pass of each, then ``--repeats``
rounds of ASE, batched (and the forces-only ASE reference), so that a disturbance of a shared machine hits them
alike. Frames/s are medians (``*_min``/``*_max``: slowest/fastest pass); ``ratio`` is the ratio of the medians
(``ratio_min``: of the slowest passes, ``ratio_rounds``: within each round); wall-clock seconds and process CPU
seconds (medians per pass) are both reported.

    python bench/relax_throughput.py [--systems 6] [--steps 8] [--batch-atoms auto|N] [--device cpu|cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.modules.setdefault("nvalchemiops", None)  # fairchem's warp backend warns about CUDA on CPU-only machines

from interleave import interleave

from augkd.generators.inflight import BatchConfig
from augkd.generators.relax import RelaxConfig, relax
from augkd.generators.relax_batched import RelaxStats, relax_batched

METALS = ("Cu", "Pt", "Pd", "Ag", "Au", "Ni")
SLABS = ((3, 3, 4), (4, 4, 4), (3, 4, 3), (4, 4, 5), (3, 3, 3), (4, 5, 4))  # 36, 64, 36, 80, 27, 80 atoms
ADSORBATES = ("CO", "OH", "O", "CH3", "NH", "H")


def make_systems(n: int, seed: int = 0) -> list:
    from ase.build import add_adsorbate, fcc111, molecule
    from ase.constraints import FixAtoms

    rng = np.random.default_rng(seed)
    systems = []
    for i in range(n):
        slab = fcc111(METALS[i % len(METALS)], size=SLABS[i % len(SLABS)], vacuum=10.0)
        z = slab.positions[:, 2]
        layers = np.unique(np.round(z, 3))
        surface = np.where(z > layers[min(1, len(layers) - 2)] + 0.1, 1, 0)
        name = ADSORBATES[i % len(ADSORBATES)]
        add_adsorbate(slab, molecule(name) if len(name) > 1 else name, 2.0, "fcc")
        tags = np.concatenate([surface, np.full(len(slab) - len(z), 2)])
        slab.set_tags(tags)
        slab.positions += rng.normal(scale=0.05, size=slab.positions.shape)
        slab.set_constraint(FixAtoms(indices=np.flatnonzero(tags == 0)))
        systems.append(slab)
    return systems


def model_teacher(name: str, systems, folder: Path, device: str):
    from ase.calculators.emt import EMT

    from augkd.models import build_model
    from augkd.models.checkpoint import save_model
    from augkd.models.data import atoms_to_batch
    from augkd.teachers import load_teacher

    energies, forces = [], []
    for atoms in systems:
        labelled = atoms.copy()
        labelled.calc = EMT()
        energies.append(labelled.get_potential_energy() / len(atoms))
        forces.append(labelled.get_forces()[labelled.get_tags() > 0])
    torch.manual_seed(0)
    model = build_model(name).eval()
    # The force head's scale is fitted so that the untrained model's forces spread like EMT's (a fresh head outputs
    # ~1e-4 eV/Å, which any fmax would call converged at once).
    with torch.no_grad():
        raw = model(atoms_to_batch(systems[:2])).forces
    model.fit_energy_normalizer(
        float(np.mean(energies)), float(max(np.std(energies), 0.1)),
        force_std=float(np.concatenate(forces).std() / raw.std()),
    )
    return load_teacher(f"ckpt:{save_model(folder / f'{name}.pt', model)}", device=device)


def chgnet_forces_only(teacher):
    """CHGNet's ASE calculator computing energy and forces only (task "ef"), on the teacher's model."""
    import contextlib
    import io

    from chgnet.model import CHGNetCalculator

    class ForcesOnly(CHGNetCalculator):
        def calculate(self, atoms=None, properties=None, system_changes=None, task="ef"):
            super().calculate(atoms, properties, system_changes, task="ef")

    with contextlib.redirect_stdout(io.StringIO()):
        return ForcesOnly(teacher.model, use_device=teacher.device)


def step_limits(n: int, steps: int) -> list[int]:
    return [steps - (i * (steps // 2)) // max(n - 1, 1) for i in range(n)]


def measure(teacher, systems, config: RelaxConfig, limits: list[int], batching: BatchConfig, device: str,
            extra_ase: dict | None = None, repeats: int = 5) -> dict:
    """Frames/s of ASE's FIRE one system at a time (``teacher.calculator()``, then each of ``extra_ase``'s
    calculators) and of the batched relaxer, on the same systems and step limits: one untimed warm-up pass of each,
    then ``repeats`` interleaved rounds (ase, batched, extra..., ase, ...). Rates and ratios are from the medians."""

    def synchronize():
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    wall_cpu: dict[str, list[tuple[int, float, float]]] = {}  # per variant, per pass: frames, wall s, CPU s

    def ase_pass(name: str, calculator):
        def run() -> float:
            wall, cpu = time.perf_counter(), time.process_time()
            frames = 0
            for atoms, limit in zip(systems, limits):
                trajectory = relax(atoms, calculator, RelaxConfig(optimizer="FIRE", fmax=config.fmax, steps=limit))
                frames += len(trajectory.frames)
            synchronize()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            wall_cpu.setdefault(name, []).append((frames, wall, cpu))
            return frames / wall

        return run

    # with --batch-atoms auto the batched relaxer measures its batch size in its first call, once per process as in
    # a generation run: a one-step call does it before the warm-up pass, reported apart from the timed passes
    warm_up = RelaxStats()
    dict(relax_batched(systems, teacher, config, batching, max_steps=1, stats=warm_up))
    synchronize()
    runs: list[tuple[RelaxStats, list[str]]] = []

    def batched_pass() -> float:
        stats = RelaxStats()
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        trajectories = dict(relax_batched(systems, teacher, config, batching, max_steps=limits, stats=stats))
        synchronize()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        frames = sum(len(t.frames) for t in trajectories.values())
        wall_cpu.setdefault("batched", []).append((frames, wall, cpu))
        runs.append((stats, sorted({t.failure for t in trajectories.values() if t.failure})))
        return frames / wall

    variants = {"ase": ase_pass("ase", teacher.calculator()), "batched": batched_pass}
    for label, calculator in (extra_ase or {}).items():
        variants[label] = ase_pass(label, calculator)
    ratios = {"ratio": ("batched", "ase"), **{label: ("batched", label) for label in extra_ase or {}}}
    measured = interleave(variants, repeats=repeats, ratios=ratios, between=gc.collect)

    def timed_passes(name: str) -> list[tuple[int, float, float]]:
        return wall_cpu[name][-repeats:]  # the first is the warm-up

    def cpu_rate(name: str) -> float:
        return statistics.median(frames / cpu for frames, _, cpu in timed_passes(name))

    def seconds(name: str) -> dict:
        passes = timed_passes(name)
        return {"wall": round(statistics.median(w for _, w, _ in passes), 2),
                "cpu": round(statistics.median(c for _, _, c in passes), 2)}

    def ratio_keys(key: str, top: str, bottom: str) -> dict:
        return {
            "ratio": round(measured.ratios[key], 3),
            "ratio_median": round(measured.ratios[key], 3),
            "ratio_min": round(measured.min[top] / measured.min[bottom], 3),  # of the slowest passes
            "ratio_rounds": [round(r, 3) for r in measured.round_ratios[key]],
            "ratio_cpu_time": round(cpu_rate(top) / cpu_rate(bottom), 3),
        }

    def rates(name: str, prefix: str) -> dict:
        return {f"{prefix}_frames_per_s": round(measured.median[name], 4),
                f"{prefix}_frames_per_s_median": round(measured.median[name], 4),
                f"{prefix}_frames_per_s_min": round(measured.min[name], 4),
                f"{prefix}_frames_per_s_max": round(measured.max[name], 4)}

    extra = {}
    for label in extra_ase or {}:
        extra[label] = {**rates(label, "ase"), **ratio_keys(label, "batched", label),
                        "seconds": {"ase_wall": seconds(label)["wall"], "ase_cpu": seconds(label)["cpu"]}}
    stats, failures = runs[-1]
    result = {
        **rates("ase", "ase"),
        **rates("batched", "batched"),
        **ratio_keys("ratio", "batched", "ase"),
        "repeats": repeats,
        "frames": {"ase": timed_passes("ase")[-1][0], "batched": timed_passes("batched")[-1][0]},
        "seconds": {"ase_wall": seconds("ase")["wall"], "batched_wall": seconds("batched")["wall"],
                    "ase_cpu": seconds("ase")["cpu"], "batched_cpu": seconds("batched")["cpu"]},
        "batched": {"forward_passes": stats.forward_passes, "max_atoms": stats.max_atoms,
                    "calibration": {"memory_max_atoms": warm_up.memory_max_atoms, "atoms_per_s": warm_up.atoms_per_s,
                                    "seconds": warm_up.calibration_seconds} if warm_up.atoms_per_s else None,
                    "largest_batch_atoms": stats.largest_batch_atoms,
                    "largest_batch_systems": stats.largest_batch_systems,
                    "failures": sorted({f for _, fs in runs for f in fs})},
    }
    if extra:
        result["against"] = extra
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", type=int, default=6)
    parser.add_argument("--steps", type=int, default=8, help="largest per-system step limit (the smallest is half)")
    parser.add_argument("--fmax", type=float, default=0.03)
    parser.add_argument("--batch-atoms", default="auto",
                        help="batched relaxer's atoms per forward pass, or auto (default: the fastest, measured)")
    parser.add_argument("--teachers", default="painn,chgnet", help="comma-separated: chgnet and/or model registry names")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed passes of each path")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    batch_atoms = args.batch_atoms if args.batch_atoms == "auto" else int(args.batch_atoms)
    batching = BatchConfig(max_atoms=batch_atoms)
    systems = make_systems(args.systems)
    config = RelaxConfig(optimizer="FIRE", fmax=args.fmax, steps=args.steps)
    limits = step_limits(len(systems), args.steps)
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    result = {
        "bench": "relax_throughput",
        "device": device_name,
        "torch_threads": torch.get_num_threads(),
        "systems": len(systems),
        "atoms": [len(a) for a in systems],
        "step_limits": limits,
        "fmax": args.fmax,
        "batch_atoms": batch_atoms,
        "repeats": args.repeats,
    }
    with tempfile.TemporaryDirectory() as folder:
        names = [t.strip() for t in args.teachers.split(",") if t.strip()]
        for name in names:
            extra = None
            if name == "chgnet":
                from augkd.teachers import load_teacher

                teacher = load_teacher("chgnet", device=args.device)
                extra = {"ase_forces_only": chgnet_forces_only(teacher)}
            else:
                from augkd.models.registry import MODEL_NAMES

                if name not in MODEL_NAMES:
                    parser.error(f"unknown teacher {name!r} (chgnet or one of {', '.join(MODEL_NAMES)})")
                teacher = model_teacher(name, systems, Path(folder), args.device)
            result[name] = measure(teacher, systems, config, limits, batching, args.device, extra, args.repeats)
            del teacher
    target = 20.0 if args.device.startswith("cuda") else 3.0
    result["target_ratio"] = target
    result["target_met"] = {name: result[name]["ratio"] >= target for name in names}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
