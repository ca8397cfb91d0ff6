"""Inference throughput of SchNet, PaiNN-small, PaiNN, GemNet-OC-small and GemNet-OC (the paper's OC20
configurations) on the same frames.

Prints ONE JSON line on stdout: samples/s per model, ratios to PaiNN, the PaiNN/GemNet-OC and SchNet/GemNet-OC
speed ratios, and the paper's A100 figures beside them. GemNet-OC's scale factors are fitted on the first batch
before timing (as a trained model would have them).
Frames are 16 OC20-like adslabs of 50–80 atoms (fcc111 slabs of Cu/Pt/Pd/Ag/Au/Ni with a small adsorbate, FixAtoms on
the bottom layers, pbc (T, T, F)). Each model runs in eval mode under ``torch.no_grad`` (SchNet re-enables grad
inside for its -∇E forces, as in deployment); the graph is built inside every forward, as in the paper's runs.
One warm-up batch, then ``--batches`` timed batches per model. Uses CUDA when available.

    python bench/inference_throughput.py [--batch-size 8] [--batches 2] [--device cpu|cuda] [--models a,b,...]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from augkd.models import build_model
from augkd.models.data import atoms_to_batch

MODELS = ("schnet", "painn-small", "painn", "gemnet-oc-small", "gemnet-oc")
PAPER_A100 = {"schnet": 788.0, "painn-small": 618.0, "painn": 238.0, "gemnet-oc": 75.8}  # samples/GPU-s (shared spec)


def make_frames(n: int = 16, seed: int = 0) -> list:
    from ase.build import add_adsorbate, fcc111, molecule
    from ase.constraints import FixAtoms

    rng = np.random.default_rng(seed)
    metals = ("Cu", "Pt", "Pd", "Ag", "Au", "Ni")
    sizes = ((4, 4, 4), (3, 4, 5), (4, 4, 3), (3, 3, 6))  # 64, 60, 48, 54 slab atoms
    adsorbates = ("CO", "OH", "H2O", "CH3", "NH3", "O")
    frames = []
    for i in range(n):
        slab = fcc111(metals[i % len(metals)], size=sizes[i % len(sizes)], vacuum=10.0)
        z = slab.positions[:, 2]
        layers = np.unique(np.round(z, 3))
        surface_tags = np.where(z > layers[1] + 0.1, 1, 0)  # two bottom layers fixed (tag 0), as in OC20
        adsorbate = adsorbates[i % len(adsorbates)]
        add_adsorbate(slab, molecule(adsorbate) if len(adsorbate) > 1 else adsorbate, 2.0, "ontop")
        tags = np.concatenate([surface_tags, np.full(len(slab) - len(z), 2)])
        slab.set_tags(tags)
        slab.positions += rng.normal(scale=0.05, size=slab.positions.shape)
        slab.set_constraint(FixAtoms(indices=np.flatnonzero(tags == 0)))
        frames.append(slab)
    return frames


def samples_per_second(model, batches: list, timed_batches: int) -> float:
    def run(batch):
        with torch.no_grad():
            out = model(batch)
        out.forces.sum().item()  # waits for the device

    run(batches[0])  # warm-up: allocator, kernels, first graph build
    start, samples = time.perf_counter(), 0
    for i in range(timed_batches):
        batch = batches[i % len(batches)]
        run(batch)
        samples += int(batch.natoms.shape[0])
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=2, help="timed batches per model (after one warm-up batch)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    args = parser.parse_args()
    models = [name for name in args.models.split(",") if name]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    device = torch.device(args.device)
    torch.manual_seed(0)

    frames = make_frames()
    batches = [
        atoms_to_batch(frames[i : i + args.batch_size]).to(device) for i in range(0, len(frames), args.batch_size)
    ]
    throughput = {}
    for name in models:
        model = build_model(name).to(device).eval()
        if model.needs_data_fit:
            model.fit_to_data(batches[0])
        throughput[name] = samples_per_second(model, batches, args.batches)
        del model

    def ratio(a: str, b: str, table: dict) -> float | None:
        return round(table[a] / table[b], 2) if a in table and b in table else None

    result = {
        "bench": "inference_throughput",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "batch_size": args.batch_size,
        "timed_batches": args.batches,
        "atoms_per_frame": [min(map(len, frames)), max(map(len, frames))],
        "samples_per_s": {name: round(value, 2) for name, value in throughput.items()},
        "ratio_to_painn": {name: ratio(name, "painn", throughput) for name in throughput},
        "painn_over_gemnet_oc": ratio("painn", "gemnet-oc", throughput),
        "schnet_over_gemnet_oc": ratio("schnet", "gemnet-oc", throughput),
        "paper_a100_samples_per_s": PAPER_A100,
        "paper_ratio_to_painn": {name: ratio(name, "painn", PAPER_A100) for name in PAPER_A100},
        "paper_painn_over_gemnet_oc": ratio("painn", "gemnet-oc", PAPER_A100),
        "paper_schnet_over_gemnet_oc": ratio("schnet", "gemnet-oc", PAPER_A100),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
