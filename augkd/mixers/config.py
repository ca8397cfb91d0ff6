"""The ``mixer`` section of a train config as one typed value, validated once where it is parsed.

``alpha_target`` is the share of draws from the non-reference source (two sources; the paper's α_target, in
[0, 1]); ``r_sdft`` the loss-weight ratio w_other/w_reference of every non-reference origin (> 0);
``weight_ratios`` per-origin ratios that win over ``r_sdft``. See ``augkd.mixers.sources`` for how they apply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from augkd.errors import ConfigError
from augkd.mixers.weights import check_ratio


def share(value: Any, name: str) -> float:
    """``value`` as a float in [0, 1], or a one-line error naming ``name`` and the value."""
    try:
        found = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} {value!r} must be a number in [0, 1]") from None
    if not (math.isfinite(found) and 0.0 <= found <= 1.0):
        raise ConfigError(f"{name} {found:g} must be in [0, 1]")
    return found


@dataclass(frozen=True)
class MixerConfig:
    """How the sources are drawn and weighed (``configs/train/default.yaml``, section ``mixer``)."""

    alpha_target: float | None = None  # share of the non-reference source's draws, in [0, 1]
    reference_origin: str = "dft"
    r_sdft: float = 1.0  # loss-weight ratio of every non-reference origin to the reference, > 0
    weight_ratios: Mapping[str, float] = field(default_factory=dict)  # origin -> ratio, wins over r_sdft
    epoch_length: int | None = None  # draws per epoch, all ranks together (None: the rows of all sources)
    replacement: bool = False

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> MixerConfig:
        """The section, each field checked once (one-line ``ConfigError`` naming the field)."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown mixer key(s) {unknown} (known: {sorted(known)})")
        alpha_target = values.get("alpha_target")
        if alpha_target is not None:
            alpha_target = share(alpha_target, "--alpha-target")
        r_sdft = check_ratio("r_sdft (every origin but the reference)", values.get("r_sdft", 1.0))
        ratios = values.get("weight_ratios") or {}
        if not isinstance(ratios, Mapping):
            raise ConfigError(f"mixer.weight_ratios must map origin → ratio, got {ratios!r}")
        ratios = {str(origin): check_ratio(origin, ratio) for origin, ratio in ratios.items()}
        length = values.get("epoch_length")
        if length is not None and (not isinstance(length, int) or isinstance(length, bool) or length <= 0):
            raise ConfigError(f"mixer.epoch_length {length!r} must be a whole number > 0 (or null: all rows)")
        replacement = values.get("replacement", False)
        if not isinstance(replacement, bool):
            raise ConfigError(f"mixer.replacement {replacement!r} must be true or false")
        reference = values.get("reference_origin", "dft")
        if not isinstance(reference, str) or not reference:
            raise ConfigError(f"mixer.reference_origin {reference!r} must be an origin name")
        return cls(alpha_target, reference, r_sdft, ratios, length, replacement)

    @classmethod
    def of(cls, mixer: MixerConfig | Mapping[str, Any] | None) -> MixerConfig:
        """``mixer`` itself if already parsed, else parsed from its mapping."""
        return mixer if isinstance(mixer, MixerConfig) else cls.from_dict(mixer)


def parse_weight_ratios(text: str) -> tuple[float | None, dict[str, float]]:
    """``--r-sdft 0.3`` (every non-reference origin) or ``--r-sdft synthetic=0.3,rattle=0.5`` (one by one)."""
    try:
        return float(text), {}
    except ValueError:
        pass
    problem = f"--r-sdft {text!r}: write a number, or ORIGIN=RATIO pairs, e.g. synthetic=0.3,rattle=0.5"
    ratios = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        origin, sep, value = item.partition("=")
        try:
            ratios[origin] = float(value)
        except ValueError:
            raise ConfigError(problem) from None
        if not (sep and origin):
            raise ConfigError(problem)
    if not ratios:
        raise ConfigError(problem)
    return None, ratios
