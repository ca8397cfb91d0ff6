"""Model checkpoints: ``save_model``/``load_model``.

The file is a plain dict {"format": "augkd-model", "version": 1, "name", "config", "state_dict", "extra"} holding
only tensors and plain Python values, so it loads with ``torch.load(weights_only=True)`` (no code runs on load).
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch

from augkd.errors import ConfigError
from augkd.models.base import AtomisticModel
from augkd.models.registry import build_model

FORMAT = "augkd-model"
VERSION = 1


def save_model(path: str | Path, model: AtomisticModel, extra: dict | None = None) -> Path:
    """Write ``model`` (its registry name, settings and weights) and ``extra`` (plain values/tensors) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "name": model.name,
        "config": model.config,
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "extra": extra or {},
    }
    # Write beside the target and rename: a reader never sees a half-written checkpoint.
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def load_model(path: str | Path, expect: str | None = None) -> tuple[AtomisticModel, dict]:
    """The model stored at ``path`` (on CPU, in eval mode, in its stored dtype) and its ``extra`` dict.

    ``expect``: the model name the caller needs; a checkpoint of another model is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no model checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise ConfigError(f"{path} is not an augkd model checkpoint ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"{path} is not an augkd model checkpoint")
    if payload.get("version") != VERSION:
        raise ConfigError(f"{path}: augkd model checkpoint version {payload.get('version')} (this augkd reads {VERSION})")
    name = payload["name"]
    if expect is not None and name != expect:
        raise ConfigError(f"{path} holds model '{name}', expected '{expect}'")
    model = build_model(name, **payload["config"])
    state = payload["state_dict"]
    dtype = next((t.dtype for t in state.values() if t.is_floating_point()), torch.get_default_dtype())
    model.to(dtype=dtype)
    model.load_state_dict(state)
    model.eval()
    return model, payload["extra"]
