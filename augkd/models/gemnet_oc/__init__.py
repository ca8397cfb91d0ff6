"""GemNet-OC (teacher and student of the paper) with CONCAT+MLP node and edge features; see ``model``."""

from augkd.models.gemnet_oc.layers import fit_scale_factors
from augkd.models.gemnet_oc.model import GemNetOC, GemNetOCSettings

__all__ = ["GemNetOC", "GemNetOCSettings", "fit_scale_factors"]
