"""``build_model(name, **overrides)``: the one way to construct an augkd model from a name and settings.

Presets are the paper's OC20 configurations (shared spec, algorithms.md "Configurations") plus tiny variants for
tests; ``configs/model/<name>.yaml`` mirrors them for hydra.
"""

from __future__ import annotations

import dataclasses

from augkd.errors import ConfigError
from augkd.models.base import AtomisticModel
from augkd.models.gemnet_oc import GemNetOC, GemNetOCSettings
from augkd.models.painn import PaiNN, PaiNNSettings
from augkd.models.schnet import SchNet, SchNetSettings

TINY = {"cutoff": 6.0, "max_neighbors": 50, "avg_num_neighbors": 20.0}
GEMNET_OC_SMALL = {"num_blocks": 3, "emb_size_atom": 128, "emb_size_edge": 256}
# Every GemNet-OC code path at test size: short cutoffs, neighbour limits that bind in slabs, quadruplets on all atoms.
GEMNET_OC_TINY = {
    "num_blocks": 2, "emb_size_atom": 16, "emb_size_edge": 16, "emb_size_trip_in": 8, "emb_size_trip_out": 8,
    "emb_size_quad_in": 4, "emb_size_quad_out": 4, "emb_size_aint_in": 8, "emb_size_aint_out": 8,
    "emb_size_rbf": 4, "emb_size_cbf": 4, "emb_size_sbf": 8, "num_spherical": 3, "num_radial": 8,
    "num_before_skip": 1, "num_after_skip": 1, "num_atom": 1, "num_output_afteratom": 1,
    "num_atom_emb_layers": 1, "num_global_out_layers": 1, "cutoff": 5.0, "cutoff_qint": 4.0,
    "cutoff_aeaint": 5.0, "cutoff_aint": 6.0, "max_neighbors": 12, "max_neighbors_qint": 4,
    "max_neighbors_aeaint": 8, "max_neighbors_aint": 40, "qint_tags": [0, 1, 2],
}

#: name → (model class, settings class, preset overrides of the settings' defaults)
_PRESETS: dict[str, tuple[type[AtomisticModel], type, dict]] = {
    "schnet": (SchNet, SchNetSettings, {}),
    "painn": (PaiNN, PaiNNSettings, {}),
    "painn-small": (PaiNN, PaiNNSettings, {"hidden_channels": 256, "num_layers": 4}),
    "schnet-tiny": (
        SchNet,
        SchNetSettings,
        {"hidden_channels": 32, "num_filters": 32, "num_interactions": 2, "num_gaussians": 16, **TINY},
    ),
    "painn-tiny": (PaiNN, PaiNNSettings, {"hidden_channels": 32, "num_layers": 2, "num_rbf": 16, **TINY}),
    "gemnet-oc": (GemNetOC, GemNetOCSettings, {}),
    "gemnet-oc-small": (GemNetOC, GemNetOCSettings, GEMNET_OC_SMALL),
    "gemnet-oc-tiny": (GemNetOC, GemNetOCSettings, GEMNET_OC_TINY),
}

MODEL_NAMES: tuple[str, ...] = tuple(_PRESETS)


def build_model(name: str, **overrides) -> AtomisticModel:
    """A freshly initialised model: the preset ``name`` with ``overrides`` applied (keys of its settings)."""
    if name not in _PRESETS:
        raise ConfigError(f"unknown model '{name}' (choose {', '.join(MODEL_NAMES)})")
    model_cls, settings_cls, preset = _PRESETS[name]
    options = {f.name for f in dataclasses.fields(settings_cls)}
    unknown = sorted(set(overrides) - options)
    if unknown:
        raise ConfigError(f"model '{name}' has no option {', '.join(unknown)} (options: {', '.join(sorted(options))})")
    model = model_cls(settings_cls(**{**preset, **overrides}))
    model.name = name
    return model
