"""The paper's configurations as presets (configs/train/paper/, issue 17 item 4).

Every preset composes through the function ``augkd train --config paper/<name>`` uses (``compose_over_default``),
passes ``TrainConfig.from_dict`` and builds its model from the registry (no forward pass). KD presets carry
Table 8's λ, train the student exactly as its baseline preset does, and name losses their teacher-student pair
supports (checked with ``KDLoss.check`` on the two models' feature shapes).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from augkd.config import compose_over_default
from augkd.kd.combine import KDLoss
from augkd.models.registry import build_model
from augkd.train.trainer import TrainConfig

PAPER = Path(__file__).resolve().parents[2] / "configs" / "train" / "paper"

BASELINES = {
    "schnet_oc20", "painn_oc20", "painn-small_oc20", "gemnet-oc_oc20", "gemnet-oc-small_oc20",
    "schnet_coll", "painn_coll", "painn-small_coll", "gemnet-oc_coll",
}
# Table 8 (shared spec algorithms.md): (teacher, student) -> loss -> (λ OC20, λ COLL); None: no such run
TABLE_8 = {
    ("gemnet-oc", "painn"): {"vanilla1": (1.0, 0.2), "vanilla2": (500, 100), "n2n": (10000, 1000), "e2n": (1000, 10),
                             "v2v": (50000, 100)},
    ("gemnet-oc", "gemnet-oc-small"): {"vanilla1": (0.2, None), "vanilla2": (10, None), "n2n": (1000, None),
                                       "e2e": (100000, None)},
    ("painn", "painn-small"): {"vanilla1": (1, 1), "vanilla2": (200, 100), "n2n": (100, 100), "v2v": (1000, 10000)},
    ("painn", "schnet"): {"vanilla1": (0.1, 1), "vanilla2": (0.1, 100), "n2n": (1000, 100)},
}
KD_PRESETS = {
    f"{teacher}_{student}_{loss}_{dataset}": (teacher, student, loss, dataset, lam)
    for (teacher, student), losses in TABLE_8.items()
    for loss, values in losses.items()
    for dataset, lam in zip(("oc20", "coll"), values)
    if lam is not None
}
PRESETS = sorted(BASELINES | set(KD_PRESETS))


@pytest.fixture(autouse=True)
def repository_configs(monkeypatch):
    monkeypatch.delenv("AUGKD_CONFIG_DIR", raising=False)


@functools.lru_cache(maxsize=None)
def _compose(name: str) -> dict:
    return compose_over_default("train", f"paper/{name}", [])


def preset(name: str) -> dict:
    import copy

    return copy.deepcopy(_compose(name))


@functools.lru_cache(maxsize=None)
def model_shapes(name: str, overrides: tuple) -> dict:
    """Feature shapes of the registry model (built once per name and settings: GemNet-OC takes seconds)."""
    return dict(build_model(name, **dict(overrides)).feature_shapes())


def model_of(values: dict) -> tuple[str, tuple]:
    return values["model"]["name"], tuple(sorted(values["model"]["overrides"].items()))


def test_the_preset_folder_holds_one_file_per_baseline_and_table_8_row():
    assert sorted(p.stem for p in PAPER.glob("*.yaml")) == PRESETS
    assert len(BASELINES) == 9 and len(KD_PRESETS) == 28


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_validates_and_builds_its_model(name, one_thread):
    values = preset(name)
    values["data"]["train"] = ["a-dataset"]  # `augkd train --data DIR` (the presets name no data)
    config = TrainConfig.from_dict(values)
    assert config["best_metric"] == "force_mae"
    assert config["optim"]["ema_decay"] == 0.999 and config["optim"]["grad_clip"] == 10.0
    shapes = model_shapes(*model_of(values))
    assert "node" in shapes


def test_command_line_overrides_apply_on_top_of_a_preset():
    values = compose_over_default("train", "paper/gemnet-oc_painn_n2n_oc20", ["steps=10", "kd.losses.0.lambda=5"])
    assert values["steps"] == 10 and values["kd"]["losses"] == [{"name": "n2n", "lambda": 5}]
    assert values["model"]["name"] == "painn" and values["optim"]["lr"] == 1.0e-4


@pytest.mark.parametrize(
    ("name", "lr", "batch_size", "scheduler"),
    [
        ("schnet_oc20", 1e-4, 64, "step"),
        ("painn_oc20", 1e-4, 32, "step"),
        ("painn-small_oc20", 1e-4, 32, "step"),
        ("gemnet-oc_oc20", 5e-4, 16, "plateau"),
        ("gemnet-oc-small_oc20", 5e-4, 32, "plateau"),
        ("schnet_coll", 1e-3, 32, "exponential"),
        ("painn_coll", 1e-3, 32, "exponential"),
        ("painn-small_coll", 1e-3, 32, "exponential"),
        ("gemnet-oc_coll", 1e-3, 32, "exponential"),
    ],
)
def test_baselines_carry_the_papers_training_settings(name, lr, batch_size, scheduler):
    values = preset(name)
    assert values["optim"]["lr"] == pytest.approx(lr)
    assert values["batch_size"] == batch_size and values["optim"]["scheduler"] == scheduler
    assert values["optim"]["amsgrad"] is True
    assert values["loss"]["energy_coef"] == 1.0
    assert values["teacher"]["mode"] == "none" and values["kd"]["losses"] == []
    if name.startswith("painn") and name.endswith("oc20"):  # MultiStepLR ×0.45 at 160k, 320k, 480k, 640k of 800k
        assert (values["optim"]["gamma"], values["optim"]["step_size"], values["steps"]) == (0.45, 160000, 800000)
    if name.startswith("gemnet") and name.endswith("oc20"):  # ReduceLROnPlateau(factor 0.8, patience 3)
        assert (values["optim"]["gamma"], values["optim"]["patience"]) == (0.8, 3)
    if name.endswith("coll"):  # lr · 0.01^(step / 4.5M) after 3750 warm-up steps
        assert values["optim"]["warmup_steps"] == 3750
        assert values["optim"]["gamma"] ** (4.5e6 / 100) == pytest.approx(0.01, rel=1e-3)


@pytest.mark.parametrize(
    ("name", "model", "overrides"),
    [
        ("schnet_oc20", "schnet", {}),
        ("schnet_coll", "schnet", {"hidden_channels": 128, "num_filters": 128, "num_interactions": 6,
                                   "num_gaussians": 50, "cutoff": 12.0}),
        ("painn_coll", "painn", {"hidden_channels": 256}),
        ("painn-small_coll", "painn-small", {"hidden_channels": 128}),
        ("gemnet-oc-small_oc20", "gemnet-oc-small", {}),
    ],
)
def test_model_sizes_follow_tables_5_to_7(name, model, overrides):
    values = preset(name)
    assert values["model"] == {"name": model, "overrides": overrides}


@pytest.mark.parametrize("name", sorted(KD_PRESETS))
def test_kd_preset_is_its_students_baseline_plus_table_8s_loss(name, one_thread):
    teacher, student, loss, dataset, lam = KD_PRESETS[name]
    values, baseline = preset(name), preset(f"{student}_{dataset}")
    assert values["kd"]["losses"] == [{"name": loss, "lambda": lam}]
    assert values["teacher"]["mode"] == "online"
    assert values["teacher"]["spec"] == f"ckpt:runs/paper/{teacher}_{dataset}/checkpoints/best.pt"
    for key in set(values) - {"teacher", "kd"}:
        assert values[key] == baseline[key], f"{name}: {key} differs from paper/{student}_{dataset}"

    teacher_values = preset(f"{teacher}_{dataset}")
    student_shapes = model_shapes(*model_of(values))
    teacher_shapes = {**model_shapes(*model_of(teacher_values)), "atom_energy": ()}  # as the trainer sees a teacher
    kd = KDLoss(values["kd"]["losses"], alpha_energy=1.0, alpha_force=100.0, energy_scale=1.0, force_scale=1.0)
    kd.check(student_shapes, teacher_shapes, student, teacher)
