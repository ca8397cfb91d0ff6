"""The KD feature vocabulary: one table for every loss name a user can type."""

import pytest

from augkd.errors import ConfigError
from augkd.kd.features import (
    HEAD_LOSSES,
    LOSS_FEATURES,
    TEACHER_FEATURES,
    check_features,
    required_teacher_features,
    resolve_teacher_feature,
    teacher_channels,
)
from augkd.vocabulary import KD_LOSS_NAMES


def test_every_kd_loss_name_has_its_features_and_no_other():
    assert tuple(LOSS_FEATURES) == KD_LOSS_NAMES
    assert set(HEAD_LOSSES) == {"n2n", "e2n", "v2v", "e2e"}
    assert set(TEACHER_FEATURES) == set(KD_LOSS_NAMES) - {"vanilla1"}


def test_raw_edge_features_resolve_to_what_each_loss_derives():
    assert resolve_teacher_feature("e2n", ["edge"]) == "edge2node"
    assert resolve_teacher_feature("v2v", ["edge"]) == "edge_vector"
    assert resolve_teacher_feature("v2v", ["edge", "vector"]) == "vector"
    assert resolve_teacher_feature("e2e", ["edge"]) == "edge"
    assert resolve_teacher_feature("n2n", ["edge"]) is None
    assert required_teacher_features(["vanilla1", "v2v", "vanilla2"]) == ["vector", "atom_energy"]


def test_check_and_channels_without_building_a_loss():
    check_features(["v2v", "vanilla1"], {"vector": (3, 8)}, {"edge": (16,)})
    assert teacher_channels("v2v", {"edge": (16,)}) == 16
    with pytest.raises(ConfigError, match="v2v: teacher feature 'vector' has per-atom shape"):
        check_features(["v2v"], {"vector": (3, 8)}, {"vector": (8,)})
