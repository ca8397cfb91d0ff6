"""fairchem v2 checkpoints (UMA / eSEN-style ``HydraModel``) from a local file: ``fairchem:<path>``.

Loaded offline with explicit CPU-safe ``InferenceSettings`` (no compile, no MOLE merge, no activation
checkpointing, no tf32, no automatically added untrained tasks): fairchem's defaults trigger a ~90 s
``torch.compile`` fallback on CPU. Energy and forces for ``calculator()`` come from ``FAIRChemCalculator``.

Features come from the backbone output ``node_embedding`` [N, (lmax+1)², C] (after the backbone's final norm, the
input of every head: the layer closest to the output):
- ``node`` (N, C): the l=0 slice.
- ``vector`` (N, 3, C): the l=1 slice (indices 1:4 of the (lmax+1)² axis). In fairchem 2.24's UMA backbone these
  three components already transform as (x, y, z) (checked numerically: R·v matches the features of the rotated
  structure only without permutation, not in e3nn's older (y, z, x) order), so no permutation is applied;
  ``L1_XYZ`` is the one place to change should a checkpoint's convention differ. Tested for rotation equivariance.
- ``atom_energy`` (N,) eV: the energy head's per-atom output (a hook on its ``energy_block``), denormalised like
  the total energy (``x·rmsd``, the normaliser mean spread evenly over the system's atoms) plus the per-element
  reference of each atom; it sums to the total energy.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from ase.data import chemical_symbols

from augkd._fairchem import quiet_fairchem
from augkd.errors import ConfigError
from augkd.hashing import sha256_file
from augkd.teachers.base import ModelTeacher, capture_outputs
from augkd.teachers.interface import TeacherIdentity

DEFAULT_TASK = "oc20"
#: indices of the (lmax+1)² axis that give the l=1 components in x, y, z order (see the module docstring)
L1_XYZ = (1, 2, 3)


@contextlib.contextmanager
def _quiet_root_logging():
    """fairchem logs its settings banner and device notes through the root logger: hold them back here."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _quiet_calculator_class(base):
    class QuietFAIRChemCalculator(base):
        """FAIRChemCalculator without the settings banner fairchem logs on the first call."""

        def calculate(self, *args, **kwargs):
            with _quiet_root_logging():
                return super().calculate(*args, **kwargs)

    return QuietFAIRChemCalculator


def cpu_inference_settings():
    from fairchem.core.units.mlip_unit.api.inference import InferenceSettings

    return InferenceSettings(
        tf32=False,
        compile=False,
        merge_mole=False,
        activation_checkpointing=False,
        auto_add_default_untrained_tasks=False,
        external_graph_gen=False,
    )


class FairchemTeacher(ModelTeacher):
    """A fairchem v2 checkpoint as a teacher (see the module docstring)."""

    def __init__(self, path: str | Path, task_name: str = DEFAULT_TASK, device: str = "cpu"):
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"teacher 'fairchem:{path}': no such checkpoint file")
        quiet_fairchem()
        with _quiet_root_logging():
            from fairchem.core.calculate.ase_calculator import FAIRChemCalculator
            from fairchem.core.units.mlip_unit import load_predict_unit

            try:
                predict_unit = load_predict_unit(
                    str(path), device=device, inference_settings=cpu_inference_settings()
                )
            except Exception as exc:  # noqa: BLE001  (any file that is not a fairchem inference checkpoint)
                raise ConfigError(f"teacher 'fairchem:{path}': cannot load it as a fairchem checkpoint ({exc})") from None
            tasks = predict_unit.dataset_to_tasks
            if task_name not in tasks:
                raise ConfigError(f"teacher 'fairchem:{path}': no task '{task_name}' (choose from {sorted(tasks)})")
            calculator = _quiet_calculator_class(FAIRChemCalculator)(predict_unit, task_name=task_name)
        self.predict_unit = predict_unit
        self.task_name = task_name
        by_property = {task.property: task for task in tasks[task_name]}
        self._energy_task = by_property.get("energy")
        self._forces_task = by_property.get("forces")
        if self._energy_task is None or self._forces_task is None:
            raise ConfigError(f"teacher 'fairchem:{path}': task '{task_name}' lacks energy or forces")
        backbone = predict_unit.model.module.backbone
        self.lmax = int(backbone.lmax)
        channels = int(backbone.sphere_channels)
        shapes = {"node": (channels,)}
        if self.lmax >= 1:
            shapes["vector"] = (3, channels)
        self._energy_head = self._find_energy_head()
        identity = TeacherIdentity(
            name=path.stem, kind="fairchem", checkpoint=str(path.resolve()), weights_sha256=sha256_file(path)
        )
        max_z = int(getattr(backbone, "max_num_elements", 100))
        elements = frozenset(chemical_symbols[1 : min(max_z, len(chemical_symbols) - 1) + 1])
        super().__init__(identity, calculator, elements, shapes, has_atom_energy=self._energy_head is not None,
                         device=device)

    def _find_energy_head(self):
        """The one head module with a per-atom ``energy_block`` (summed to the energy), or None."""
        import torch

        heads = [
            module
            for module in self.predict_unit.model.module.output_heads.modules()
            if isinstance(getattr(module, "energy_block", None), torch.nn.Module)
            and getattr(module, "reduce", "sum") in ("sum", "mean")
        ]
        return heads[0] if len(heads) == 1 else None

    def _to_batch(self, atoms_list):
        from fairchem.core.datasets.atomic_data import atomicdata_list_to_batch

        data = []
        for atoms in atoms_list:
            atoms = atoms.copy()
            self.predict_unit.validate_atoms_data(atoms, self.task_name)  # charge/spin defaults
            data.append(self._calculator.a2g(atoms))
        return atomicdata_list_to_batch(data)

    def _forward_atoms(self, atoms_list):
        return self.predict(self._to_batch(atoms_list))

    def predict(self, batch, differentiable: bool = False):
        """Energy, forces, per-atom energies and features for a fairchem ``AtomicData`` batch (any task field).

        Not differentiable: fairchem's predict unit detaches its outputs (an attack uses them as constants).
        """
        import torch

        if differentiable:
            raise self._no_differentiable_predict()

        from augkd.models.interface import ModelOutput

        batch = batch.clone()
        num_graphs = int(batch.natoms.numel())
        batch.dataset = [self.task_name] * num_graphs
        for key in ("charge", "spin"):
            if key not in batch:
                batch[key] = torch.zeros(num_graphs, dtype=torch.long)
        model = self.predict_unit.model.module
        hooks = {"embedding": (model.backbone, lambda out: out["node_embedding"])}
        if self._energy_head is not None:
            hooks["node_energy"] = (self._energy_head.energy_block, lambda out: out)
        with capture_outputs(hooks) as captured, _quiet_root_logging():
            prediction = self.predict_unit.predict(batch)
        energy = prediction["energy"].detach().cpu().reshape(-1).float()
        forces = prediction["forces"].detach().cpu().float()
        embedding = captured["embedding"][-1].cpu().float()
        features = {"node": embedding[:, 0, :].contiguous()}
        if self.lmax >= 1:
            features["vector"] = embedding[:, list(L1_XYZ), :].contiguous()
        if self._energy_head is not None:
            atom_energy = self._atom_energy(batch, captured["node_energy"][-1].cpu().double().reshape(-1))
        else:  # no per-atom decomposition: spread the energy evenly (documented as such by has_atom_energy=False)
            atom_energy = (energy.double() / batch.natoms.double())[batch.batch]
        return ModelOutput(energy=energy, forces=forces, atom_energy=atom_energy.float(), features=features)

    def _atom_energy(self, batch, node_energy):
        """Per-atom energy (eV): the head's per-atom output denormalised as the total energy is, plus references."""
        import torch

        task = self._energy_task
        natoms = batch.natoms.cpu().double()[batch.batch.cpu()]
        if getattr(self._energy_head, "reduce", "sum") == "mean":
            node_energy = node_energy / natoms
        rmsd = task.normalizer.rmsd.detach().cpu().double()
        mean = task.normalizer.mean.detach().cpu().double()
        atom_energy = node_energy * rmsd + mean / natoms
        if task.element_references is not None:
            references = task.element_references.element_references.detach().cpu().double()
            atom_energy = atom_energy + references[batch.atomic_numbers.cpu().long()]
        return atom_energy.to(torch.float64)


def load_fairchem_teacher(path: str, task_name: str = DEFAULT_TASK, device: str = "cpu") -> FairchemTeacher:
    if not path:
        raise ConfigError("teacher 'fairchem:' needs a checkpoint path, e.g. fairchem:/models/uma-s.pt")
    return FairchemTeacher(path, task_name=task_name, device=device)
