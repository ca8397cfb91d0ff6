"""``augkd evaluate``: OC20 S2EF metrics of model checkpoints on datasets, optionally as a gap-closed table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from augkd.errors import ConfigError
from augkd.train.data import FrameDataset, iter_batches
from augkd.element_refs import ElementReferences
from augkd.train.metrics import MetricAccumulator, compare_table


def evaluate_model(
    model: torch.nn.Module, dataset: FrameDataset, batch_size: int = 8, device: torch.device | None = None
) -> dict[str, float]:
    """OC20 S2EF metrics of ``model`` over every row of ``dataset`` (micro-averaged)."""
    model.eval()
    metrics = MetricAccumulator()
    for batch in iter_batches(dataset, batch_size, device):
        metrics.update_output(model(batch.batch), batch.batch)
    return metrics.compute()


def evaluate_checkpoint(path: str | Path, dataset: FrameDataset, batch_size: int = 8) -> tuple[dict[str, float], str]:
    """(metrics, note) of one checkpoint on ``dataset``: energies compared on the element references the model was
    trained against (its own, from the checkpoint), as the trainer's validation does; the note says which."""
    from augkd.models.checkpoint import load_model

    model, extra = load_model(path)
    dataset.references = None
    note = ""
    if extra.get("element_refs") is not None:
        dataset.references = ElementReferences.from_extra(extra["element_refs"])
        note = reference_note(dataset)
    return evaluate_model(model, dataset, batch_size), note


def evaluate_checkpoints(
    checkpoints: Sequence[str], data: Sequence[str | Path], batch_size: int = 8,
    compare: Sequence[str] | None = None, as_json: bool = False,
) -> str:
    dataset = FrameDataset(data)
    results, notes = {}, []
    for item in checkpoints:
        name, _, path = item.rpartition("=") if "=" in item else (Path(item).stem, "", item)
        results[name], note = evaluate_checkpoint(path, dataset, batch_size)
        if note:
            notes.append(f"{name}: {note}")
    if compare:
        student, teacher = compare
        missing = [n for n in compare if n not in results]
        if missing:
            raise ConfigError(f"--compare names {missing} are not among the checkpoints {sorted(results)}")
        return "\n".join([compare_table(results, student, teacher), *notes])
    if as_json:
        return json.dumps(results)
    lines = []
    for name, metrics in results.items():
        lines.append(
            f"{name}: energy MAE {metrics['energy_mae']:.1f} meV, force MAE {metrics['force_mae']:.1f} meV/Å, "
            f"force cos {metrics['force_cos']:.3f}, EFwT {metrics['efwt']:.2f} % ({metrics['n_systems']} systems)"
        )
    return "\n".join(lines + notes)


def reference_note(dataset: FrameDataset) -> str:
    """Which element references the energies of ``dataset``'s rows are compared on (it has references)."""
    origins = sorted({dataset.origin(i) for i in range(len(dataset))})
    used = {origin: dataset.reference_origin(origin) for origin in origins}
    parts = [f"origin {o!r}" + ("" if u == o else f" (not trained on: origin {u!r}'s)") for o, u in used.items()]
    return f"energy MAE against the element references of {', '.join(parts)}"
