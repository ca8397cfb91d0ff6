"""Knowledge distillation: KD losses, student projection heads, automatic λ, CKA analysis."""

from augkd.kd.heads import ProjectionHeads, feature_shapes, strip_kd_heads
from augkd.kd.losses import (
    KD_LOSS_NAMES,
    KDLoss,
    LossBatch,
    TeacherTargets,
    calibrate_lambdas,
    edge_to_node,
    edge_to_vector,
    ocp_loss,
)

__all__ = [
    "KD_LOSS_NAMES",
    "KDLoss",
    "LossBatch",
    "ProjectionHeads",
    "TeacherTargets",
    "calibrate_lambdas",
    "edge_to_node",
    "edge_to_vector",
    "feature_shapes",
    "ocp_loss",
    "strip_kd_heads",
]
