"""Initial weights for fine-tuning (``--init-from``): any augkd checkpoint into a new run."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from augkd.errors import ConfigError


def checkpoint_model(path: str | Path) -> tuple[str, dict[str, Any]]:
    """The model name and settings stored in ``path`` (a model checkpoint or a run's last.pt)."""
    return _model_of(_load(path))


def _model_of(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if payload.get("format") == "augkd-model":
        return payload["name"], dict(payload["config"])
    model = json.loads(payload["config"])["model"]
    return model["name"], dict(model.get("overrides") or {})


def initial_weights(path: str | Path, student: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The weights in ``path`` for ``student`` (KD heads left out) and the normaliser stored with them.

    A model checkpoint gives its weights; a run's ``last.pt`` its EMA weights (what its best/final exports hold).
    """
    from augkd.kd.heads import strip_kd_heads

    payload = _load(path)
    name, _ = _model_of(payload)
    if name != student.name:
        raise ConfigError(f"--init-from {path} holds model '{name}', this run trains '{student.name}'")
    if payload.get("format") == "augkd-model":
        weights, normalizer = payload["state_dict"], payload.get("extra", {}).get("normalizer")
    else:
        weights, normalizer = payload["ema"], payload.get("normalizer")
    weights = strip_kd_heads(weights)
    own = student.state_dict()
    wrong = [k for k, v in weights.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if wrong:
        raise ConfigError(f"--init-from {path}: {wrong[0]} has shape {tuple(weights[wrong[0]].shape)}, the model "
                          f"{student.name} here {tuple(own[wrong[0]].shape)} (other model settings?)")
    return {k: v.to(own[k].dtype) if k in own else v for k, v in weights.items()}, normalizer


def _load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--init-from {path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise ConfigError(f"--init-from {path}: not an augkd checkpoint ({type(error).__name__})") from None
    if not isinstance(payload, dict) or not (payload.get("format") == "augkd-model" or "ema" in payload):
        raise ConfigError(f"--init-from {path}: not an augkd model checkpoint or training state")
    return payload
