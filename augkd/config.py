"""Hydra configs: ``configs/<group>/<name>.yaml`` composed with ``key=value`` overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from augkd.errors import ConfigError


def config_dir() -> Path:
    """``$AUGKD_CONFIG_DIR`` if set, else the repository's ``configs/``."""
    override = os.environ.get("AUGKD_CONFIG_DIR")
    return Path(override) if override else Path(__file__).resolve().parent.parent / "configs"


def compose(group: str, name: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """The resolved config ``group/name`` with hydra-style overrides (``relax.fmax=0.05``, ``+extra=1``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    folder = config_dir() / group
    if not (folder / f"{name}.yaml").is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(f"unknown {group} config '{name}' (known: {known})")
    try:
        with initialize_config_dir(config_dir=str(folder), version_base=None):
            composed = hydra_compose(config_name=name, overrides=list(overrides or []))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"bad override in {overrides}: {str(exc).splitlines()[0]}") from None
    return OmegaConf.to_container(composed, resolve=True)  # type: ignore[return-value]
