"""A tiny random-weight UMA/eSEN-style fairchem v2 model, saved in fairchem's inference-checkpoint format.

``save_tiny_fairchem_checkpoint(path)`` builds an ``eSCNMDBackbone`` (lmax 1, 8 channels, 1 layer) with an
energy head whose forces are -dE/dpos, wraps it in fairchem's ``HydraModel`` from a hydra dict with full class
paths, and writes an ``MLIPInferenceCheckpoint`` that ``load_predict_unit`` reads back offline. The "oc20" task
has a non-trivial normaliser and element references so that per-atom energy bookkeeping is really exercised.
"""

from __future__ import annotations

from pathlib import Path

from augkd._fairchem import quiet_fairchem

TASK = "oc20"


def tiny_model_config(
    lmax: int = 1, channels: int = 8, layers: int = 1, cutoff: float = 5.0, datasets=(TASK,)
) -> dict:
    return {
        "_target_": "fairchem.core.models.base.HydraModel",
        "otf_graph": True,
        "pass_through_head_outputs": True,
        "backbone": {
            "model": "fairchem.core.models.uma.escn_md.eSCNMDBackbone",
            "max_num_elements": 100,
            "sphere_channels": channels,
            "lmax": lmax,
            "mmax": lmax,
            "otf_graph": True,
            "max_neighbors": 30,
            "cutoff": cutoff,
            "edge_channels": channels,
            "num_distance_basis": 16,
            "direct_forces": False,
            "regress_forces": True,
            "regress_stress": False,
            "num_layers": layers,
            "hidden_channels": channels,
            "norm_type": "rms_norm_sh",
            "act_type": "gate",
            "ff_type": "spectral",
            "chg_spin_emb_type": "rand_emb",
            "dataset_mapping": {name: name for name in datasets},
            "use_dataset_embedding": True,
            "always_use_pbc": False,
        },
        "heads": {
            "energyandforcehead": {
                "module": "fairchem.core.models.uma.escn_moe.DatasetSpecificSingleHeadWrapper",
                "head_cls": "fairchem.core.models.uma.escn_md.MLP_EFS_Head",
                "dataset_names": list(datasets),
                "head_kwargs": {"wrap_property": False},
            }
        },
    }


def tiny_tasks_config(task: str = TASK, energy_mean: float = 0.3, energy_rmsd: float = 2.0) -> list[dict]:
    import torch

    refs = torch.zeros(101)
    refs[1], refs[6], refs[7], refs[8], refs[29], refs[78] = -3.4, -7.3, -8.1, -7.2, -3.7, -6.1
    return [
        {
            "_target_": "fairchem.core.units.mlip_unit.mlip_unit.Task",
            "name": f"{task}_energy",
            "level": "system",
            "property": "energy",
            "out_spec": {"_target_": "fairchem.core.units.mlip_unit.mlip_unit.OutputSpec", "dim": [1], "dtype": "float32"},
            "normalizer": {
                "_target_": "fairchem.core.modules.normalization.normalizer.Normalizer",
                "mean": energy_mean,
                "rmsd": energy_rmsd,
            },
            "element_references": {
                "_target_": "fairchem.core.modules.normalization.element_references.ElementReferences",
                "element_references": refs,
            },
            "datasets": [task],
        },
        {
            "_target_": "fairchem.core.units.mlip_unit.mlip_unit.Task",
            "name": f"{task}_forces",
            "level": "atom",
            "property": "forces",
            "out_spec": {"_target_": "fairchem.core.units.mlip_unit.mlip_unit.OutputSpec", "dim": [3], "dtype": "float32"},
            "normalizer": {
                "_target_": "fairchem.core.modules.normalization.normalizer.Normalizer",
                "mean": 0.0,
                "rmsd": energy_rmsd,
            },
            "datasets": [task],
        },
    ]


def save_tiny_fairchem_checkpoint(path: str | Path, seed: int = 0, **model_kwargs) -> Path:
    """Build the tiny model with random weights (seeded) and save it as an ``MLIPInferenceCheckpoint``."""
    quiet_fairchem()
    import hydra
    import torch
    from fairchem.core.units.mlip_unit.api.inference import MLIPInferenceCheckpoint

    config = tiny_model_config(**model_kwargs)
    torch.manual_seed(seed)
    model = hydra.utils.instantiate(config)
    with torch.no_grad():  # random init leaves some layers at zero; make every weight count
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    ema = torch.optim.swa_utils.AveragedModel(model)
    checkpoint = MLIPInferenceCheckpoint(
        model_config=config,
        model_state_dict=model.state_dict(),
        ema_state_dict=ema.state_dict(),
        tasks_config=tiny_tasks_config(),
    )
    path = Path(path)
    torch.save(checkpoint, path)
    return path
