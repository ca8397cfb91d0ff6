"""``augkd info``: what a dataset holds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from augkd.io.arrays import is_encoded_array
from augkd.io.dataset import load_manifest, read_frames


def dataset_info(path: str | Path) -> dict[str, Any]:
    """Counts, origins, elements, energy/force statistics and drop counts of a dataset directory."""
    manifest = load_manifest(path)
    origins: Counter[str] = Counter()
    elements: Counter[str] = Counter()
    systems: set[str] = set()
    energy_per_atom, max_force, atoms_per_row = [], [], []
    cached: dict[str, str] = {}
    for frame in read_frames(path):
        if not cached:
            cached = _cached_outputs(frame.data)
        origins[str(frame.data.get("origin", "unknown"))] += 1
        systems.add(str(frame.data.get("sid")))
        elements.update(frame.atoms.get_chemical_symbols())
        energy_per_atom.append(frame.energy / len(frame.atoms))
        free = ~frame.fixed
        max_force.append(float(np.linalg.norm(frame.forces[free], axis=1).max()) if free.any() else 0.0)
        atoms_per_row.append(len(frame.atoms))
    totals = manifest.get("totals", {})
    return {
        "path": str(path),
        "kind": manifest.get("kind"),
        "teacher": (manifest.get("teacher") or {}).get("name"),
        "labelled_by": (manifest.get("labelled_by") or {}).get("name"),
        "cached_outputs": cached,
        "rows": len(energy_per_atom),
        "systems_with_rows": len(systems),
        "systems_planned": manifest.get("systems"),
        "shards": len(manifest.get("shards", [])),
        "origins": dict(sorted(origins.items())),
        "elements": dict(sorted(elements.items(), key=lambda kv: (-kv[1], kv[0]))),
        "atoms_per_row": _stats(atoms_per_row),
        "energy_per_atom_eV": _stats(energy_per_atom),
        "max_free_force_eV_per_A": _stats(max_force),
        "dropped_systems": totals.get("dropped_systems", {}),
        "dropped_frames": totals.get("dropped_frames", {}),
    }


def _cached_outputs(data: dict) -> dict[str, str]:
    """Teacher outputs a row caches (``augkd label``/``jitter --features``): name → "dtype per-atom shape"."""
    found = {}
    arrays = {"energy": data.get("teacher_energy"), "forces": data.get("teacher_forces"),
              "atom_energy": data.get("teacher_atom_energy"), **(data.get("teacher_features") or {})}
    for name, value in arrays.items():
        if value is None:
            continue
        if is_encoded_array(value):  # dtype and shape travel beside the bytes: nothing to decode
            dtype, shape = np.dtype(value["dtype"]), tuple(value["shape"])
        else:
            array = np.asarray(value)
            dtype, shape = array.dtype, array.shape
        found[name] = f"{dtype} {shape[1:]}" if shape else str(dtype)
    return found


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    array = np.asarray(values, dtype=float)
    return {k: round(float(f(array)), 6) for k, f in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max))}


def format_info(info: dict[str, Any]) -> str:
    made_by = f" by {info['teacher']}" if info["teacher"] else ""
    lines = [f"{info['path']}: {info['kind'] or 'dataset'}{made_by}"]
    if info.get("labelled_by"):
        lines.append(f"  labelled by {info['labelled_by']}")
    if info.get("cached_outputs"):
        lines.append("  cached      " + ", ".join(f"{k} ({v})" for k, v in info["cached_outputs"].items()))
    lines.append(
        f"  rows {info['rows']} from {info['systems_with_rows']}"
        f"{'' if info['systems_planned'] is None else ' of ' + str(info['systems_planned'])} systems, "
        f"{info['shards']} shards"
    )
    lines.append("  origins     " + ", ".join(f"{k} {v}" for k, v in info["origins"].items()))
    lines.append("  elements    " + ", ".join(f"{k} {v}" for k, v in info["elements"].items()))
    for key, label in (
        ("atoms_per_row", "atoms/row"),
        ("energy_per_atom_eV", "E/atom eV"),
        ("max_free_force_eV_per_A", "max|F| eV/Å"),
    ):
        s = info[key]
        if s:
            lines.append(f"  {label:<12}mean {s['mean']:.4g}  std {s['std']:.4g}  min {s['min']:.4g}  max {s['max']:.4g}")
    for key in ("dropped_systems", "dropped_frames"):
        counts = info[key]
        lines.append(f"  {key.replace('_', ' '):<18}" + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))
    return "\n".join(lines)
