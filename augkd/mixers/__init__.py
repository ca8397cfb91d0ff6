"""Mixing training sources: α_target sampling over N origins and origin-weighted losses (algorithms.md "Mixer")."""

from augkd.mixers.config import MixerConfig, parse_weight_ratios
from augkd.mixers.sampler import MixtureSampler, check_alphas
from augkd.mixers.sources import Mixture, Source, parse_source, resolve_mixture
from augkd.mixers.stats import OriginStats, epoch_row
from augkd.mixers.weights import batch_shares, origin_weights

__all__ = [
    "MixerConfig",
    "Mixture",
    "MixtureSampler",
    "OriginStats",
    "Source",
    "batch_shares",
    "check_alphas",
    "epoch_row",
    "origin_weights",
    "parse_source",
    "parse_weight_ratios",
    "resolve_mixture",
]
