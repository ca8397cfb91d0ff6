"""Dense layers, residual layers and data-fitted scale factors of GemNet-OC.

Every dense layer starts from a "He-orthogonal" weight (orthogonal rows, rescaled to variance 1/fan_in) and uses a
SiLU divided by 0.6, so a unit-variance input gives roughly unit-variance activations; the remaining drift (sums over
neighbours, products with bases) is removed by ``ScaleFactor``s fitted on data (``fit_scale_factors``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# SiLU of a standard normal input has a standard deviation of about 0.6: dividing by it keeps activations O(1).
SILU_STD = 0.6


class ScaledSiLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.silu(x) * (1.0 / SILU_STD)


@torch.no_grad()
def he_orthogonal_(weight: torch.Tensor) -> torch.Tensor:
    """Orthogonal init, then each output row standardised to mean 0 and variance 1/fan_in (fan_in = last axes)."""
    nn.init.orthogonal_(weight)
    flat = weight.reshape(weight.shape[0], -1)
    fan_in = flat.shape[1]
    if fan_in > 1:
        flat.sub_(flat.mean(dim=1, keepdim=True)).div_(flat.std(dim=1, keepdim=True).clamp_min(1e-12))
    weight.copy_((flat / math.sqrt(fan_in)).reshape(weight.shape))
    return weight


class Dense(nn.Module):
    """Linear layer (He-orthogonal init) followed by a scaled SiLU, or by nothing when ``activation`` is False."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, activation: bool = True):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        he_orthogonal_(self.linear.weight)
        if bias:
            nn.init.zeros_(self.linear.bias)
        self.activation = ScaledSiLU() if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))


class ResidualLayer(nn.Module):
    """x + MLP(x), divided by √2 so that the sum of two unit-variance terms keeps unit variance."""

    def __init__(self, units: int, num_layers: int = 2):
        super().__init__()
        self.mlp = nn.Sequential(*(Dense(units, units) for _ in range(num_layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.mlp(x)) * (1.0 / math.sqrt(2.0))


def residual_stack(in_features: int, units: int, num_residual: int) -> nn.Sequential:
    """An optional Dense to ``units`` (only when the sizes differ) followed by ``num_residual`` residual layers."""
    layers = [Dense(in_features, units)] if in_features != units else []
    layers += [ResidualLayer(units) for _ in range(num_residual)]
    return nn.Sequential(*layers)


class ScaleFactor(nn.Module):
    """Multiplies by a constant fitted on data so that the output has the variance of ``ref`` (or unit variance).

    Sums over a variable number of neighbours and products with basis functions change the scale of activations
    in ways initialisation cannot foresee; GemNet-OC measures it once on a batch and stores the factor (buffers
    ``scale`` and ``fitted``, saved in every checkpoint). Until fitted the factor is 1. While
    ``fit_scale_factors`` runs, each factor is set the first time data reaches it, before its output moves on, so
    later factors see already-rescaled inputs (the sequential fit of the original, in a single forward pass).
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.fitting = False

    @staticmethod
    def _variance(x: torch.Tensor) -> float:
        if x.shape[0] < 2:
            return float("nan")
        return float(x.detach().reshape(x.shape[0], -1).double().var(dim=0).mean())

    def forward(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        if self.fitting and not bool(self.fitted):
            target = 1.0 if ref is None else self._variance(ref)
            observed = self._variance(x)
            # no rows (e.g. no quadruplet in the batch) or a constant output: nothing to measure, stay unfitted
            if math.isfinite(observed) and observed > 0 and math.isfinite(target) and target > 0:
                self.scale.fill_(math.sqrt(target / observed))
                self.fitted.fill_(True)
        return x * self.scale


def fit_scale_factors(model: nn.Module, batch, refit: bool = False) -> list[str]:
    """Fit every (not yet fitted, or every with ``refit``) ``ScaleFactor`` of ``model`` on one ``batch``.

    One forward pass without gradients; a factor is fitted when data first reaches it. Returns the names of the
    factors that saw no data in this batch (they stay at 1; e.g. quadruplet factors when no atom carries a tag in
    ``qint_tags``). Use a batch of several typical systems: the fit is only as representative as the batch.
    """
    factors = {name: module for name, module in model.named_modules() if isinstance(module, ScaleFactor)}
    was_training = model.training
    model.eval()
    try:
        for factor in factors.values():
            if refit:
                factor.scale.fill_(1.0)
                factor.fitted.fill_(False)
            factor.fitting = True
        with torch.no_grad():  # models with -∇E forces turn gradients back on for themselves
            model(batch)
    finally:
        for factor in factors.values():
            factor.fitting = False
        model.train(was_training)
    return [name for name, factor in factors.items() if not bool(factor.fitted)]
