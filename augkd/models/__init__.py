"""augkd models: SchNet, PaiNN and GemNet-OC over fairchem ``AtomicData`` batches, all returning ``ModelOutput``.

``build_model(name, **overrides)`` constructs one; ``save_model``/``load_model`` store and restore it.
"""

from augkd.models.checkpoint import load_model, save_model
from augkd.models.interface import FEATURE_KINDS, Graph, ModelOutput, build_graph
from augkd.models.registry import MODEL_NAMES, build_model

__all__ = [
    "FEATURE_KINDS",
    "MODEL_NAMES",
    "Graph",
    "ModelOutput",
    "build_graph",
    "build_model",
    "load_model",
    "save_model",
]
