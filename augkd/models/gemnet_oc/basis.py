"""GemNet-OC's basis functions: Gaussian radial basis with a polynomial envelope, a spherical-harmonics circular
basis for one angle, a Legendre-outer spherical basis for an angle and a dihedral, and their learned embeddings.

All of them depend on distances and on cosines of angles between edges only, so everything built on them is
invariant to rotations, translations and permutations.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from augkd.models.gemnet_oc.layers import he_orthogonal_


class PolynomialEnvelope(nn.Module):
    """u(x) = 1 - (p+1)(p+2)/2·x^p + p(p+2)·x^(p+1) - p(p+1)/2·x^(p+2) for x = d/r_c < 1, else 0.

    u, u' and u'' vanish at x = 1, so basis values (and direct forces built on them) go smoothly to zero at r_c.
    """

    def __init__(self, exponent: int = 5):
        super().__init__()
        if exponent < 1:
            raise ValueError(f"envelope exponent must be ≥ 1, got {exponent}")
        p = float(exponent)
        self.p = p
        self.coefficients = (-(p + 1) * (p + 2) / 2, p * (p + 2), -p * (p + 1) / 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = self.coefficients
        xp = x.pow(self.p)
        value = 1 + xp * (a + x * (b + c * x))
        return torch.where(x < 1, value, torch.zeros_like(x))


class RadialBasis(nn.Module):
    """Gaussians exp(-(x - μ_k)²/(2σ²)) on x = d/r_c, K centres evenly on [0, 1] (σ = their spacing), times the
    polynomial envelope: (E,) distances in Å → (E, K)."""

    def __init__(self, num_radial: int, cutoff: float, envelope_exponent: int = 5):
        super().__init__()
        self.inv_cutoff = 1.0 / cutoff
        self.register_buffer("centres", torch.linspace(0.0, 1.0, num_radial), persistent=False)
        spacing = 1.0 / (num_radial - 1)
        self.coefficient = -0.5 / spacing**2
        self.envelope = PolynomialEnvelope(envelope_exponent)

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        x = dist * self.inv_cutoff
        gaussians = torch.exp(self.coefficient * (x.unsqueeze(-1) - self.centres.to(x.dtype)) ** 2)
        return self.envelope(x).unsqueeze(-1) * gaussians


def circular_basis(cosine: torch.Tensor, num_spherical: int) -> torch.Tensor:
    """Real spherical harmonics Y_l^0 = √((2l+1)/4π)·P_l(cos) for l < ``num_spherical``: (T,) → (T, L).

    Legendre polynomials by Bonnet's recursion (l+1)P_{l+1} = (2l+1)x·P_l - l·P_{l-1}.
    """
    polynomials = [torch.ones_like(cosine), cosine]
    for degree in range(1, num_spherical - 1):
        polynomials.append(((2 * degree + 1) * cosine * polynomials[-1] - degree * polynomials[-2]) / (degree + 1))
    norms = [math.sqrt((2 * degree + 1) / (4 * math.pi)) for degree in range(num_spherical)]
    return torch.stack([n * p for n, p in zip(norms, polynomials[:num_spherical])], dim=-1)


def spherical_basis(cos_angle: torch.Tensor, cos_dihedral: torch.Tensor, num_spherical: int) -> torch.Tensor:
    """"Legendre outer" basis of GemNet-OC: Y_l^0(cos φ)·Y_l'^0(cos θ) for all l, l' < L: (Q,), (Q,) → (Q, L²)."""
    angle, dihedral = circular_basis(cos_angle, num_spherical), circular_basis(cos_dihedral, num_spherical)
    outer = angle.unsqueeze(-1) * dihedral.unsqueeze(-2)
    return outer.reshape(cos_angle.shape[0], num_spherical**2)


def cosine_between(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Cosine between unit vectors, clamped to [-1, 1] against rounding."""
    return (u * v).sum(dim=-1).clamp(-1.0, 1.0)


# Added to |n₁|²|n₂|² in the dihedral cosine. A dihedral is undefined when three of its atoms are collinear (common
# in crystals); there the cross products vanish up to rounding, and without this term rounding noise would pick an
# arbitrary cosine. With it such dihedrals read ≈ 0 (as the original's clamped atan2 gives θ = π/2) and gradients
# stay finite; for ordinary geometries (|n₁||n₂| ≳ 0.1) it changes the cosine by < 1e-4.
DIHEDRAL_EPS = 1e-6


def dihedral_cosine(u_ac: torch.Tensor, u_ab: torch.Tensor, u_bd: torch.Tensor) -> torch.Tensor:
    """cos of the dihedral c-a-b-d about the axis a→b: unit vectors a→c, a→b, b→d (each (Q, 3)) → (Q,)."""
    n1 = torch.linalg.cross(u_ac, u_ab, dim=-1)
    n2 = torch.linalg.cross(u_bd, u_ab, dim=-1)
    norms = (n1 * n1).sum(-1) * (n2 * n2).sum(-1)
    return (n1 * n2).sum(-1) / torch.sqrt(norms + DIHEDRAL_EPS)


class BasisEmbedding(nn.Module):
    """Learned projection of a radial basis, shared by all interaction blocks.

    With ``num_spherical``: (E, R) → (E, C, L), one C×L matrix per edge that later contracts the angular basis
    (the efficient bilinear form of GemNet). Without: (E, R) → (E, C).
    """

    def __init__(self, num_radial: int, size: int, num_spherical: int | None = None):
        super().__init__()
        self.num_spherical = num_spherical
        shape = (size, num_radial) if num_spherical is None else (size * num_spherical, num_radial)
        self.weight = nn.Parameter(he_orthogonal_(torch.empty(shape)))
        self.size = size

    def forward(self, rad: torch.Tensor) -> torch.Tensor:
        out = rad @ self.weight.T
        if self.num_spherical is None:
            return out
        return out.reshape(rad.shape[0], self.size, self.num_spherical)
