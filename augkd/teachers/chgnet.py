"""CHGNet (weights ship inside the ``chgnet`` wheel; works offline).

Features: ``node`` (N, 64) = the output of ``readout_norm`` (the LayerNorm after the last atom-conv layer), which is
exactly the input of CHGNet's per-atom readout MLP: the layer closest to the output (the paper's ablations favour
it). ``atom_energy`` (N,) eV = CHGNet's site energies (readout MLP per atom + the composition model's per-element
shift); they sum to the total energy in eV (``predict_graph`` reports eV/atom; the teacher converts).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

from ase.data import chemical_symbols

from augkd.errors import ConfigError
from augkd.hashing import sha256_file
from augkd.teachers.base import ModelTeacher, capture_outputs
from augkd.teachers.interface import GraphCutoff, TeacherIdentity

DEFAULT_VERSION = "0.3.0"
# CHGNet embeds atomic numbers 1..94 (its AtomEmbedding has 94 rows).
CHGNET_ELEMENTS = frozenset(chemical_symbols[1:95])


def chgnet_weights_path(version: str) -> Path:
    import chgnet

    folder = Path(chgnet.__file__).parent / "pretrained" / version
    weights = sorted(folder.glob("*.pth.tar"))
    if not weights:
        shipped = sorted(p.name for p in (folder.parent).iterdir() if p.is_dir())
        raise ConfigError(f"teacher 'chgnet:{version}': no such CHGNet version in the wheel (shipped: {shipped})")
    return weights[0]


class CHGNetTeacher(ModelTeacher):
    """CHGNet with per-atom energies and ``node`` features (see the module docstring)."""

    #: structures per CHGNet forward call in ``predict``
    chunk = 16

    def __init__(self, model, calculator, identity: TeacherIdentity, device: str = "cpu"):
        self.model = model
        width = model.model_args.get("atom_fea_dim", 64)
        super().__init__(identity, calculator, CHGNET_ELEMENTS, {"node": (int(width),)}, device=device, conservative=True)

    def graph_cutoff(self) -> GraphCutoff:
        return GraphCutoff(float(self.model.graph_converter.atom_graph_cutoff))

    def _node_module(self):
        return self.model.readout_norm if self.model.readout_norm is not None else self.model.atom_conv_layers[-1]

    #: ``predict(batch, differentiable=True)``: CHGNet takes -∂E/∂x with ``create_graph=True`` itself, so its
    #: forces can be differentiated once more with respect to the positions
    differentiable = True

    def predict(self, batch, differentiable: bool = False):
        """See ``TorchTeacher.predict``; differentiable outputs stay on the teacher's device.

        Differentiable mode builds CHGNet's graphs (neighbour lists, images) from the detached positions and adds
        ``batch.pos - batch.pos.detach()`` (zero, but with the gradient of the identity) to each graph's
        fractional coordinates: the values are exactly CHGNet's own, and autograd reaches ``batch.pos``.
        Features are detached (hooks copy them).
        """
        if not differentiable:
            return self._forward_atoms(batch.to_ase())
        plain = batch.clone()
        plain.pos = batch.pos.detach()
        return self._forward_atoms(plain.to_ase(), offsets=batch.pos - batch.pos.detach())

    def _forward_atoms(self, atoms_list, offsets=None):
        import torch
        from pymatgen.io.ase import AseAtomsAdaptor

        from augkd.models.interface import ModelOutput

        keep = (lambda t: t) if offsets is not None else (lambda t: t.detach().cpu())
        energies, forces, site_energies, nodes = [], [], [], []
        first_atom = 0
        for start in range(0, len(atoms_list), self.chunk):
            chunk = atoms_list[start : start + self.chunk]
            with contextlib.redirect_stdout(io.StringIO()):
                graphs = [self.model.graph_converter(AseAtomsAdaptor.get_structure(a)).to(self.device) for a in chunk]
            if offsets is not None:
                for graph, atoms in zip(graphs, chunk):
                    shift = offsets[first_atom : first_atom + len(atoms)].to(self.device, graph.atom_frac_coord.dtype)
                    lattice = graph.lattice.detach()
                    graph.atom_frac_coord = graph.atom_frac_coord.detach() + shift @ torch.linalg.inv(lattice)
                    first_atom += len(atoms)
            with capture_outputs({"node": (self._node_module(), lambda out: out)}) as captured:
                prediction = self.model(graphs, task="ef", return_site_energies=True)
            natoms = torch.tensor([len(a) for a in chunk], dtype=torch.float32, device=prediction["e"].device)
            energy = keep(prediction["e"]).float()
            energies.append(energy * natoms.to(energy.device) if self.model.is_intensive else energy)  # eV/atom -> eV
            forces.extend(keep(f) for f in prediction["f"])
            site_energies.extend(keep(e) for e in prediction["site_energies"])
            nodes.append(captured["node"][0].cpu())
        return ModelOutput(
            energy=torch.cat(energies),
            forces=torch.cat(forces).float(),
            atom_energy=torch.cat(site_energies).float(),
            features={"node": torch.cat(nodes).float()},
        )


def load_chgnet_teacher(version: str = DEFAULT_VERSION, device: str = "cpu") -> CHGNetTeacher:
    weights = chgnet_weights_path(version)
    from chgnet.model import CHGNet, CHGNetCalculator

    # chgnet announces itself on stdout and warns on every call about a tensor copy of its own; neither helps.
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
    with contextlib.redirect_stdout(io.StringIO()):
        model = CHGNet.from_file(str(weights), verbose=False)
        calculator = CHGNetCalculator(model, use_device=device)
    model = calculator.model  # on its device
    model.eval()
    identity = TeacherIdentity(
        name=f"chgnet-{version}", kind="chgnet", checkpoint=str(weights), weights_sha256=sha256_file(weights)
    )
    return CHGNetTeacher(model, calculator, identity, device=str(calculator.device))
