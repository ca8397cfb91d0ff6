"""Hydra configs: ``configs/<group>/<name>.yaml`` composed with ``key=value`` overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from augkd.errors import ConfigError


def config_dir() -> Path:
    """``$AUGKD_CONFIG_DIR`` (absolute or relative to the working directory) if set, else the repository's
    ``configs/``."""
    override = os.environ.get("AUGKD_CONFIG_DIR")
    return Path(override).resolve() if override else Path(__file__).resolve().parent.parent / "configs"


def _known(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))


def compose(group: str, name: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """The resolved config ``group/name`` with hydra-style overrides (``relax.fmax=0.05``, ``+extra=1``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    folder = config_dir() / group
    if not folder.is_dir():
        raise ConfigError(f"no config folder {folder} (AUGKD_CONFIG_DIR={os.environ.get('AUGKD_CONFIG_DIR')!r})")
    if not (folder / f"{name}.yaml").is_file():
        raise ConfigError(f"unknown {group} config '{name}' (known: {_known(folder)})")
    try:
        with initialize_config_dir(config_dir=str(folder), version_base=None):
            composed = hydra_compose(config_name=name, overrides=list(overrides or []))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"bad override in {overrides}: {str(exc).splitlines()[0]}") from None
    return OmegaConf.to_container(composed, resolve=True)  # type: ignore[return-value]


def compose_over_default(group: str, config: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """``configs/<group>/default.yaml``, then ``config`` merged over it, then the overrides.

    ``config`` is a yaml file path or a name under ``configs/<group>/`` (``paper/painn_oc20``); it may hold only the
    keys it changes. A key the default lacks is an error naming it, except under mappings that the default leaves
    empty (free-form settings such as ``model.overrides``).
    """
    import yaml
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    folder = config_dir() / group
    path = Path(config)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        if path.suffix in (".yaml", ".yml"):
            raise ConfigError(f"--config {config}: no such file")
        path = folder / f"{config}.yaml"
        if not path.is_file():
            known = _known(folder) if folder.is_dir() else []
            raise ConfigError(f"--config {config}: neither a yaml file nor a {group} config (known: {known})")
    base = compose(group, "default")
    try:
        with open(path) as handle:
            changes = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--config {path}: unreadable yaml ({str(exc).splitlines()[0]})") from None
    if not isinstance(changes, dict):
        raise ConfigError(f"--config {path}: must hold a mapping of settings")
    changes.pop("defaults", None)  # a hydra defaults list naming the default config itself
    _check_known_keys(changes, base, path)
    try:
        merged = OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(changes))
        OmegaConf.set_struct(merged, True)  # as hydra composes: a new key needs `+key=value`, a typo is an error
        parsed = OverridesParser.create().parse_overrides(list(overrides or []))
        ConfigLoaderImpl._apply_overrides_to_config(parsed, merged)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"bad override in {overrides}: {str(exc).splitlines()[0]}") from None
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]


def _check_known_keys(changes: dict, base: dict, path: Path, prefix: str = "") -> None:
    for key, value in changes.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"--config {path}: unknown key {dotted} (known here: {', '.join(sorted(base))})")
        if isinstance(value, dict) and isinstance(base[key], dict) and base[key]:
            _check_known_keys(value, base[key], path, f"{dotted}.")


def apply_flags(values: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """Set every dotted key of ``flags`` (``relax.fmax``, ``data.train``) whose value is not None in the resolved
    config ``values`` (in place; returned): command-line flags win over the yaml and the ``key=value`` overrides."""
    for dotted, value in flags.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        section = values
        for parent in parents:
            section = section[parent]
        section[leaf] = value
    return values
