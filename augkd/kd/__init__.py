"""Knowledge distillation, one concept per module: ``features`` (which loss reads which feature), ``targets`` (the
teacher's side, online or cached), ``losses`` (L0 and the KD losses), ``combine`` (``KDLoss``, λ calibration),
``heads`` (the student's projection heads) and ``cka`` (analysis)."""

from augkd.kd.combine import KDLoss, calibrate_lambdas
from augkd.kd.heads import ProjectionHeads, feature_shapes, strip_kd_heads
from augkd.kd.losses import ocp_loss
from augkd.kd.targets import TeacherTargets, edge_to_node, edge_to_vector
from augkd.reductions import LossBatch
from augkd.vocabulary import KD_LOSS_NAMES

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
