"""Projection heads: shapes, always-learned Linear, saved with the student under kd_heads., strippable."""

import pytest
import torch
from torch import nn

from augkd.errors import ConfigError
from augkd.kd import KDLoss, ProjectionHeads, strip_kd_heads


def test_n2n_head_shapes_and_always_linear():
    heads = ProjectionHeads({"node": (8,)}, {"node": (32,)}, ["n2n", "vanilla1"])
    assert set(heads) == {"n2n"}
    assert heads["n2n"](torch.randn(5, 8)).shape == (5, 32)
    same = ProjectionHeads({"node": (8,)}, {"node": (8,)}, ["n2n"])
    assert isinstance(same["n2n"], nn.Linear) and same["n2n"].bias is not None  # learned even when shapes match


def test_heads_from_edge_features():
    kd = KDLoss([{"name": "e2n"}, {"name": "v2v"}])
    heads = ProjectionHeads({"node": (8,), "vector": (3, 8)}, {"edge": (16,)}, kd)
    assert heads["e2n"].out_features == 16 and heads["v2v"].out_features == 16
    assert heads["v2v"](torch.randn(4, 3, 8)).shape == (4, 3, 16)


def test_heads_refuse_missing_features():
    with pytest.raises(ConfigError, match="v2v needs the student's 'vector'"):
        ProjectionHeads({"node": (8,)}, {"vector": (3, 8)}, ["v2v"])


class Student(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(3, 8)
        shapes = {"node": (8,), "vector": (3, 8)}
        self.kd_heads = ProjectionHeads(shapes, {"node": (4,), "vector": (3, 4)}, ["n2n", "v2v"])


def test_saved_with_student_and_strippable():
    sd = Student().state_dict()
    assert {"kd_heads.n2n.weight", "kd_heads.n2n.bias", "kd_heads.v2v.weight"} <= set(sd)
    stripped = strip_kd_heads(sd)
    assert set(stripped) == {"body.weight", "body.bias"}
    ddp = {"module." + k: v for k, v in sd.items()}
    assert set(strip_kd_heads(ddp)) == {"module.body.weight", "module.body.bias"}
    deploy = nn.Module()
    deploy.body = nn.Linear(3, 8)
    deploy.load_state_dict(stripped)  # strict load works
