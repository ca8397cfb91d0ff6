"""SevenNet (optional extra ``augkd[sevennet]``; SevenNet-0 weights ship inside the ``sevenn`` wheel).

Features (read with forward hooks on the model's named modules, copied at hook time because every module returns
the same data dict):
- ``node`` (N, 128): ``node_feature`` after the last equivariant gate (``4_equivariant_gate``, 128x0e), the input
  of the per-atom energy readout (``reduce_input_to_hidden``): the layer closest to the output.
- ``vector`` (N, 3, 64): the 64x1e block of ``node_feature`` after ``3_equivariant_gate`` (128x0e+64x1e+32x2e;
  the last gate has scalars only). e3nn lays an irrep block out as (mul, 2l+1) and, in e3nn >= 0.2, orders the
  l=1 components as x, y, z; the block is transposed to (N, 3, 64).
- ``atom_energy`` (N,) eV: ``atomic_energy`` written by ``rescale_atomic_energy`` (shifted and scaled), whose sum
  is the total energy.
"""

from __future__ import annotations

import contextlib
import warnings

from ase.data import chemical_symbols

from augkd.errors import ConfigError
from augkd.hashing import sha256_file
from augkd.teachers.base import ModelTeacher, capture_outputs
from augkd.teachers.interface import GraphCutoff, TeacherIdentity

DEFAULT_MODEL = "7net-0"
# Names that resolve to weights inside the wheel; others (omat, mf-ompa, omni, ...) would download.
SHIPPED_MODELS = ("7net-0", "sevennet-0", "7net-l3i5", "sevennet-l3i5", "7net-mf-0", "sevennet-mf-0")


NODE_MODULE = "4_equivariant_gate"
VECTOR_MODULE = "3_equivariant_gate"
FORCE_MODULE = "force_output"


@contextlib.contextmanager
def _graph_kept(force_module, keep: bool):
    """SevenNet's force module differentiates with ``create_graph=self.training``: set it for this call only."""
    if not keep or force_module is None:
        yield
        return
    was = force_module.training
    force_module.training = True
    try:
        yield
    finally:
        force_module.training = was


def _irrep_block(irreps, l: int) -> tuple[int, int] | None:
    """(offset, multiplicity) of the first block of degree ``l`` in an e3nn ``Irreps``."""
    offset = 0
    for mul, irrep in irreps:
        if irrep.l == l:
            return offset, mul
        offset += mul * irrep.dim
    return None


class SevenNetTeacher(ModelTeacher):
    """SevenNet with per-atom energies, ``node`` and ``vector`` features (see the module docstring)."""

    def __init__(self, calculator, identity: TeacherIdentity, elements):
        self.model = calculator.model
        modules = self.model._modules
        shapes = {}
        node_irreps = modules[NODE_MODULE].gate.irreps_out
        shapes["node"] = (_irrep_block(node_irreps, 0)[1],)
        self._vector_block = None
        if VECTOR_MODULE in modules:
            self._vector_block = _irrep_block(modules[VECTOR_MODULE].gate.irreps_out, 1)
            if self._vector_block is not None:
                shapes["vector"] = (3, self._vector_block[1])
        self._node_width = shapes["node"][0]
        super().__init__(identity, calculator, elements, shapes, device=calculator.device, conservative=True)

    def graph_cutoff(self) -> GraphCutoff | None:
        cutoff = self._calculator.cutoff
        return GraphCutoff(float(cutoff)) if isinstance(cutoff, (int, float)) else None

    @property
    def differentiable(self) -> bool:
        """SevenNet takes forces from ∂E/∂(edge vectors); ``FORCE_MODULE`` must be there to keep that graph."""
        return FORCE_MODULE in self.model._modules

    def predict(self, batch, differentiable: bool = False):
        """See ``TorchTeacher.predict``; differentiable outputs stay on the teacher's device.

        Differentiable mode builds SevenNet's graphs from the detached positions, then adds ``o[dst] − o[src]``,
        o = ``batch.pos − batch.pos.detach()`` (zero, with the gradient of the identity), to every edge vector
        (pos[dst] − pos[src] + shift): values exactly SevenNet's own, and autograd reaches ``batch.pos``. The force
        module runs with ``create_graph`` (its training flag, for that call only) so forces stay differentiable.
        Features are detached (hooks copy them).
        """
        if not differentiable:
            return self._forward_atoms(batch.to_ase())
        if not self.differentiable:
            raise ConfigError(f"teacher {self.identity.name} has no {FORCE_MODULE!r} module to differentiate")
        plain = batch.clone()
        plain.pos = batch.pos.detach()
        return self._forward_atoms(plain.to_ase(), offsets=batch.pos - batch.pos.detach())

    def _forward_atoms(self, atoms_list, offsets=None):
        import sevenn._keys as KEY
        import torch
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph

        from augkd.models.interface import ModelOutput

        calc = self._calculator
        keep = (lambda t: t) if offsets is not None else (lambda t: t.detach())
        hooks = {"node": (self.model._modules[NODE_MODULE], lambda out: out[KEY.NODE_FEATURE])}
        if self._vector_block is not None:
            hooks["vector"] = (self.model._modules[VECTOR_MODULE], lambda out: out[KEY.NODE_FEATURE])
        force_module = self.model._modules.get(FORCE_MODULE)
        energies, forces, atom_energies = [], [], []
        first_atom = 0
        # one structure per call: SevenNet's batch mode gave no speed-up on CPU (shared spec)
        with capture_outputs(hooks) as captured, _graph_kept(force_module, offsets is not None):
            for atoms in atoms_list:
                data = AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(atoms, calc.cutoff, with_shift=False))
                if calc.modal:
                    data[KEY.DATA_MODALITY] = calc.modal
                data.to(calc.device)
                if offsets is not None:
                    shift = offsets[first_atom : first_atom + len(atoms)].to(calc.device, data[KEY.EDGE_VEC].dtype)
                    source, target = data[KEY.EDGE_IDX]
                    data[KEY.EDGE_VEC] = data[KEY.EDGE_VEC] + shift[target] - shift[source]
                    first_atom += len(atoms)
                output = self.model(data)
                energies.append(keep(output[KEY.PRED_TOTAL_ENERGY]).reshape(1))
                forces.append(keep(output[KEY.PRED_FORCE])[: len(atoms)])
                atom_energies.append(keep(output[KEY.ATOMIC_ENERGY]).reshape(-1))
        features = {"node": torch.cat(captured["node"])[:, : self._node_width]}
        if self._vector_block is not None:
            offset, mul = self._vector_block
            block = torch.cat(captured["vector"])[:, offset : offset + 3 * mul]
            features["vector"] = block.reshape(-1, mul, 3).transpose(1, 2).contiguous()
        place = (lambda t: t.float()) if offsets is not None else (lambda t: t.cpu().float())
        return ModelOutput(
            energy=place(torch.cat(energies)),
            forces=place(torch.cat(forces)),
            atom_energy=place(torch.cat(atom_energies)),
            features={name: value.cpu().float() for name, value in features.items()},
        )


def load_sevennet_teacher(model: str = DEFAULT_MODEL, device: str = "cpu") -> SevenNetTeacher:
    if model.lower() not in SHIPPED_MODELS:
        raise ConfigError(f"teacher 'sevennet:{model}': not shipped in the sevenn wheel (offline choices: {SHIPPED_MODELS})")
    try:
        from sevenn.calculator import SevenNetCalculator
        from sevenn.util import pretrained_name_to_path
    except ImportError:
        raise ConfigError("teacher 'sevennet' needs the optional extra: pip install 'augkd[sevennet]'") from None
    checkpoint = pretrained_name_to_path(model)
    with warnings.catch_warnings():  # it advises GPU tensor-product kernels that do not exist on CPU
        warnings.simplefilter("ignore", UserWarning)
        calculator = SevenNetCalculator(checkpoint, device=device)
    species = getattr(calculator, "type_map", None) or {}
    elements = frozenset(chemical_symbols[int(z)] for z in species) or None
    identity = TeacherIdentity(
        name=f"sevennet-{model.lower()}", kind="sevennet", checkpoint=str(checkpoint),
        weights_sha256=sha256_file(checkpoint),
    )
    return SevenNetTeacher(calculator, identity, elements)
