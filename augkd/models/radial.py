"""Distance expansions, the smooth cutoff and the activation shared by the models.

Every function here depends on the edge length only, so anything built from them is rotation invariant.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class CosineCutoff(nn.Module):
    """f(d) = ½(cos(πd/r_c) + 1) for d < r_c, else 0: takes messages smoothly to zero at the cutoff, so energies
    stay continuous when a neighbour crosses r_c."""

    def __init__(self, cutoff: float):
        super().__init__()
        self.cutoff = cutoff

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        value = 0.5 * (torch.cos(dist * (math.pi / self.cutoff)) + 1.0)
        return value * (dist < self.cutoff).to(dist.dtype)


class GaussianRBF(nn.Module):
    """exp(-γ(d - μ_k)²) with K centres evenly spaced on [0, r_c] and γ = 1/(2·spacing²) (SchNet)."""

    def __init__(self, num_basis: int, cutoff: float):
        super().__init__()
        centres = torch.linspace(0.0, cutoff, num_basis)
        spacing = cutoff / (num_basis - 1)
        self.register_buffer("centres", centres)
        self.gamma = 0.5 / spacing**2

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.gamma * (dist.unsqueeze(-1) - self.centres) ** 2)


class SineRBF(nn.Module):
    """sin(nπd/r_c)/d for n = 1..K (PaiNN): the Bessel-like basis of the paper, finite as d → 0."""

    def __init__(self, num_basis: int, cutoff: float):
        super().__init__()
        self.register_buffer("frequencies", torch.arange(1, num_basis + 1) * (math.pi / cutoff))

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        dist = dist.unsqueeze(-1)
        return torch.sin(self.frequencies * dist) / dist.clamp_min(1e-9)


class ShiftedSoftplus(nn.Module):
    """softplus(x) - ln 2: zero at x = 0, smooth (SchNet's activation; smooth so -∇E forces are smooth too)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(x) - math.log(2.0)
