"""Origin weights of a batch (shared spec, algorithms.md "Mixer").

Each origin k has a ratio ρ_k to the reference origin (ρ_dft = 1, ρ_synthetic = r_s/dft). In a batch where origin k
makes up the fraction α_b,k of the samples, its samples weigh

    w_k = ρ_k / Σ_j α_b,j·ρ_j          so that  Σ_k α_b,k·w_k = 1

(two origins: w_dft = 1/(1 − α_b + α_b·r), w_s = r·w_dft; a batch of one origin weighs 1). The denominator is the
batch mean of ρ over its samples, so the weights average to 1 over the batch's samples and only the ratios matter.
The losses take them as linear per-sample weights (energy) and per-atom weights (forces, features).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from augkd.errors import ConfigError


def check_ratio(origin: str, ratio: float) -> float:
    """A weight ratio must be a finite number > 0."""
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise ConfigError(f"weight ratio of origin {origin!r} must be a number > 0, got {ratio!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"weight ratio of origin {origin!r} must be > 0, got {ratio!r}")
    return value


def origin_weights(origins: Sequence[str], ratios: Mapping[str, float]) -> torch.Tensor:
    """(B,) float64 per-sample weights w_k of a batch whose samples have ``origins`` (ρ = 1 for origins not listed)."""
    if not origins:
        return torch.zeros(0, dtype=torch.float64)
    rho = torch.tensor([float(ratios.get(origin, 1.0)) for origin in origins], dtype=torch.float64)
    return rho / rho.mean()


def batch_shares(origins: Sequence[str]) -> dict[str, float]:
    """α_b,k: the fraction of the batch's samples from each origin."""
    shares: dict[str, float] = {}
    for origin in origins:
        shares[origin] = shares.get(origin, 0.0) + 1.0 / len(origins)
    return shares
