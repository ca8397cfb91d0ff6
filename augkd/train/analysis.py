"""Looking at runs and models: learning curves and parity plots (``augkd plot``), layer CKA (``augkd analyze cka``)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from augkd.errors import ConfigError
from augkd.train.data import FrameDataset, iter_batches


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {key: np.array([float(r[key]) if r[key] not in ("", None) else np.nan for r in rows]) for key in rows[0]}


def _predict(model, dataset: FrameDataset, batch_size: int = 8):
    energies, forces = [], []
    model.eval()
    for batch in iter_batches(dataset, batch_size):
        output = model(batch.batch)
        free = batch.batch.fixed == 0
        energies.append(torch.stack([output.energy.detach(), batch.batch.energy], 1))
        forces.append(torch.stack([output.forces.detach()[free].flatten(), batch.batch.forces[free].flatten()], 1))
    return torch.cat(energies).numpy(), torch.cat(forces).numpy()


def run_name(path: str | Path) -> str:
    """What to call a run in a plot: the run directory of ``RUN/checkpoints/X.pt``, else the file's stem."""
    path = Path(path)
    if path.is_dir():
        return path.resolve().name
    return path.parent.parent.name if path.parent.name == "checkpoints" else path.stem


def _loss_families(keys: list[str]) -> dict[str, list[str]]:
    """Training-loss columns grouped into one panel each: totals, per origin, KD terms, online jitter."""
    families: dict[str, list[str]] = {}
    for key in keys:
        if key.startswith("kd_"):
            family = "KD losses"
        elif key.startswith("jitter_"):
            family = "online jitter"
        elif key.count("_") >= 2:  # loss_energy_<origin>, loss_forces_<origin>
            family = "per-origin losses"
        else:
            family = "training loss"
        families.setdefault(family, []).append(key)
    return families


def plot_run(run: str | Path, data: Sequence[str | Path] | None = None) -> list[Path]:
    """``RUN/learning_curves.png`` (training loss parts, validation metrics) and, with ``data``, ``RUN/parity.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run)
    if not (run / "train.csv").is_file():
        raise ConfigError(f"{run} is not a training run (no train.csv)")
    train = _read_csv(run / "train.csv")
    val = _read_csv(run / "val.csv") if (run / "val.csv").is_file() else {}
    written = []
    families = _loss_families([k for k in train if k.startswith(("loss", "kd_", "jitter_"))])
    scores = [key for key in ("energy_mae", "force_mae") if key in val]
    panels = len(families) + bool(scores)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.8), squeeze=False)
    axes = axes[0]
    for axis, (family, keys) in zip(axes, families.items()):
        for key in keys:
            axis.plot(train["step"], train[key], label=key, lw=0.8)
        axis.set(xlabel="step", ylabel="loss (normalised units)", yscale="log", title=family)
        axis.legend(fontsize=7)
    for key in scores:
        axes[-1].plot(val["step"], val[key], marker="o", label=f"{key} (meV{'/Å' if key == 'force_mae' else ''})")
    if scores:
        axes[-1].set(xlabel="step", yscale="log", title="validation (EMA weights)")
        axes[-1].legend(fontsize=7)
    fig.suptitle(f"{run_name(run)}: learning curves")
    fig.tight_layout()
    fig.savefig(run / "learning_curves.png", dpi=110)
    plt.close(fig)
    written.append(run / "learning_curves.png")
    if data:
        from augkd.models.checkpoint import load_model

        checkpoint = run / "checkpoints" / ("best.pt" if (run / "checkpoints" / "best.pt").is_file() else "final.pt")
        model, _ = load_model(checkpoint)
        energies, forces = _predict(model, FrameDataset(data))
        fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
        for axis, values, unit, name in ((axes[0], energies, "eV", "energy"), (axes[1], forces, "eV/Å", "force")):
            axis.scatter(values[:, 1], values[:, 0], s=4, alpha=0.6)
            low, high = float(values.min()), float(values.max())
            axis.plot([low, high], [low, high], "k--", lw=0.8)
            axis.set(xlabel=f"reference {name} ({unit})", ylabel=f"predicted {name} ({unit})",
                     title=f"{name}: MAE {np.abs(values[:, 0] - values[:, 1]).mean():.3g} {unit}")
        fig.suptitle(f"{run_name(run)} ({checkpoint.name}) on {', '.join(Path(d).name for d in data)}")
        fig.tight_layout()
        fig.savefig(run / "parity.png", dpi=110)
        plt.close(fig)
        written.append(run / "parity.png")
    return written


def layer_features(checkpoint: str | Path, dataset: FrameDataset, max_atoms: int = 4000) -> dict[str, torch.Tensor]:
    """Node features of every block of a model (``U1..UL, M1..ML`` for PaiNN, ``I1..Ik`` for SchNet)."""
    from augkd.models.checkpoint import load_model
    from augkd.models.registry import build_model

    model, _ = load_model(checkpoint)
    config = dict(model.config)
    blocks = config.get("num_layers") or config.get("num_interactions")
    layers = ([f"M{k}" for k in range(1, blocks + 1)] + [f"U{k}" for k in range(1, blocks + 1)]
              if "num_layers" in config else [f"I{k}" for k in range(1, blocks + 1)])
    out: dict[str, torch.Tensor] = {}
    for layer in layers:
        probe = build_model(model.name, **{**config, "feature_layer": layer})
        probe.load_state_dict(model.state_dict())
        probe.to(next(model.parameters()).dtype).eval()
        chunks, seen = [], 0
        for batch in iter_batches(dataset, 8):
            chunks.append(probe(batch.batch).features["node"].detach())
            seen += chunks[-1].shape[0]
            if seen >= max_atoms:
                break
        out[layer] = torch.cat(chunks)[:max_atoms]
    return out


def analyze_cka(checkpoint_a: str | Path, checkpoint_b: str | Path, data: Sequence[str | Path], out: str | Path) -> str:
    """Linear CKA between every layer of two models on the same atoms; writes a PNG heat map, returns a table."""
    from augkd.kd.cka import cka_matrix, cka_table, plot_cka

    dataset = FrameDataset(data)
    features_a = layer_features(checkpoint_a, dataset)
    features_b = layer_features(checkpoint_b, dataset)
    matrix = cka_matrix(features_a, features_b)
    plot_cka(matrix, list(features_a), list(features_b), out, name_a=run_name(checkpoint_a), name_b=run_name(checkpoint_b))
    return cka_table(matrix, list(features_a), list(features_b))
