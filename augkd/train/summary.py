"""``augkd info RUN_DIR``: a training run's sources and mixture, its epochs (realised α, per-origin losses), its scores."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from augkd.errors import ConfigError


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _number(text: str) -> float | int | None:
    if text in ("", None):
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def run_info(path: str | Path) -> dict[str, Any]:
    """What ``Trainer.fit`` wrote in ``path``: config, mixture, epochs.csv, the last train and val rows."""
    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not a training run (config.json: {exc})") from None
    mixture = json.loads((path / "mixture.json").read_text()) if (path / "mixture.json").is_file() else None
    train = _rows(path / "train.csv")
    val = _rows(path / "val.csv")
    epochs = [{key: _number(value) for key, value in row.items()} for row in _rows(path / "epochs.csv")]
    return {
        "path": str(path),
        "kind": "training run",
        "model": config["model"]["name"],
        "step": int(train[-1]["step"]) if train else 0,
        "steps": config["steps"],
        "teacher": config["teacher"]["mode"],
        "kd": [term["name"] for term in config["kd"]["losses"]],
        "kd_lambdas": {term["name"]: term["lambda"] for term in config["kd"]["losses"]}
        | (config.get("resolved") or {}).get("kd_lambdas", {}),
        "mixture": mixture,
        "epochs": epochs,
        "val": {key: _number(value) for key, value in val[-1].items()} if val else None,
    }


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in [header, *rows]]


def format_run_info(info: dict[str, Any]) -> str:
    kd = ", ".join(f"{name} λ {_fmt(info['kd_lambdas'].get(name))}" for name in info["kd"]) or "none"
    title = (f"{info['path']}: training run of {info['model']}, step {info['step']}/{info['steps']} "
             f"(teacher {info['teacher']}, KD {kd})")
    lines = [title]
    mixture = info["mixture"]
    origins: list[str] = []
    if mixture:
        origins = [s["origin"] for s in mixture["sources"]]
        rows = [[s["origin"], str(s["rows"]), f"{s['alpha']:.4g}", f"{s['weight_ratio']:.4g}", ", ".join(s["paths"])]
                for s in mixture["sources"]]
        lines.append(f"  sources (epoch of {mixture['epoch_length']} draws, "
                     f"{'with' if mixture['replacement'] else 'without'} replacement within a source; "
                     f"weights {'on' if mixture['weighted'] else 'off'}, reference {mixture['reference_origin']})")
        lines += ["    " + line for line in _table(["origin", "rows", "α target", "weight ratio", "paths"], rows)]
    if info["epochs"]:
        lines.append("  epochs (α: realised share of the draws, all ranks; L_E, L_F: unweighted mean losses in "
                     "normalised units, rank 0)")
        header = ["epoch", "step", "draws"] + [f"α {o}" for o in origins]
        header += [f"{q} {o}" for o in origins for q in ("L_E", "L_F")]
        table = []
        for row in info["epochs"]:
            cells = [f"{row['epoch']}{'' if row['complete'] else '*'}", _fmt(row["step"]), _fmt(row["draws"])]
            cells += [_fmt(row.get(f"alpha_{o}"), 3) for o in origins]
            cells += [_fmt(row.get(f"loss_{q}_{o}")) for o in origins for q in ("energy", "forces")]
            table.append(cells)
        lines += ["    " + line for line in _table(header, table)]
        if any(not row["complete"] for row in info["epochs"]):
            lines.append("    * the epoch training ended in (partial)")
    if info["val"]:
        v = info["val"]
        lines.append(f"  val at step {v['step']}: E MAE {_fmt(v.get('energy_mae'))} meV, "
                     f"F MAE {_fmt(v.get('force_mae'))} meV/Å, F cos {_fmt(v.get('force_cos'))}, "
                     f"EFwT {_fmt(v.get('efwt'))} %")
    return "\n".join(lines)
