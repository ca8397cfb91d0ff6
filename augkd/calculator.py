"""``AugkdCalculator``: a trained augkd student as an ASE calculator.

    from ase.io import read
    from augkd.calculator import AugkdCalculator

    atoms = read("slab.traj")
    atoms.calc = AugkdCalculator("student.pt")       # or a run directory, best.pt, final.pt, last.pt
    print(atoms.get_potential_energy(), atoms.get_forces())

It loads an exported student (``augkd export``) or a training checkpoint (EMA weights, KD heads stripped), runs in
float32 with the model's own normaliser and adds the element references the student was trained against. PaiNN
and SchNet students run on a Verlet-skin neighbour list (``augkd.student.neighbors``), through the TorchScript
module stored in an exported file when there is one; GemNet-OC students build their graphs every call.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from ase.data import chemical_symbols

from augkd.errors import AugkdError
from augkd.models.potential import Potential, load_scripted, script
from augkd.student.allocator import keep_freed_memory
from augkd.student.export import load_student
from augkd.student.neighbors import VerletList
from augkd.threads import set_threads


def unseen_elements(species, numbers) -> list[str]:
    """Symbols of the atomic ``numbers`` outside ``species`` (a collection of atomic numbers; None: none unseen)."""
    if species is None:
        return []
    return [chemical_symbols[z] for z in sorted(set(int(z) for z in numbers) - set(species))]


class AugkdCalculator(Calculator):
    """Energy (eV), free energy (= energy) and forces (eV/Å) of a trained augkd student; per-atom ``energies`` too.

    ``path``: an exported ``student.pt``, a model checkpoint (``best.pt``/``final.pt``), a trainer state
    (``last.pt``) or a run directory (its best checkpoint). ``device``: ``auto`` (CUDA when visible), ``cpu``,
    ``cuda[:N]``. ``threads``: torch threads for this process (None: ``SLURM_CPUS_PER_TASK`` or the CPU affinity;
    see ``augkd.threads``). ``skin`` (Å): Verlet skin of the neighbour list (default: the one the file records,
    1 Å); 0 rebuilds it every call. ``torchscript``: use the scripted module of an exported file (False: eager
    PyTorch, same numbers). A structure with elements outside the student's training species gets a warning
    (``warn_unseen=False``: none; ``augkd md/relax`` check the species themselves).

    ``timings`` accumulates seconds spent in the neighbour list, the model, and the calls (``calls``);
    ``min_distance`` is the shortest interatomic distance (Å) of the last structure computed on a neighbour list
    (inf when no pair is within the cutoff; None for models that build their own graphs).
    """

    implemented_properties: ClassVar[list[str]] = ["energy", "free_energy", "forces", "energies"]

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        threads: int | None = None,
        skin: float | None = None,
        torchscript: bool = True,
        warn_unseen: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        from augkd.teachers import resolve_device

        self.threads = set_threads(threads)
        self.device = torch.device(resolve_device(device))
        if self.device.type == "cpu":
            keep_freed_memory()
        self.student = load_student(path)
        self.path = self.student.path
        self.species = None if self.student.species is None else frozenset(int(z) for z in self.student.species)
        self._reference = self.student.element_reference()
        self.dtype = torch.float32
        self.model = self.student.build_model(self.dtype).to(self.device)
        changed = self.model.prepare_for_inference()
        self.model_name = self.student.name
        self.direct_forces = bool(self.model.direct_forces)
        self.potential = None
        if self.model.edge_list:
            if torchscript and self.student.torchscript is not None:
                self.potential = script(self.model) if changed else load_scripted(self.student.torchscript, self.device)
            else:
                self.potential = Potential(self.model)
            settings = self.model.settings
            self.neighbors = VerletList(
                settings.cutoff, self.student.skin if skin is None else skin, settings.max_neighbors, self.threads
            )
        else:
            self.neighbors = None
        self.timings = {"neighbors": 0.0, "model": 0.0, "calls": 0}
        self.min_distance: float | None = None
        self._warn_unseen_elements = warn_unseen
        self._warned: set[tuple[str, ...]] = set()
        self._structure = None  # the copy of the atoms last computed (ASE's reset() forgets self.atoms)

    def _warn_unseen(self, numbers) -> None:
        unseen = tuple(unseen_elements(self.species, numbers))
        if unseen and unseen not in self._warned:
            self._warned.add(unseen)
            warnings.warn(
                f"{self.path}: the structure holds {', '.join(unseen)}, which the student never saw in training",
                stacklevel=3,
            )

    def _run_potential(self, atoms) -> tuple[torch.Tensor, torch.Tensor]:
        start = time.perf_counter()
        edges = self.neighbors.edges(atoms)
        self.min_distance = float(edges.distances.min(initial=np.inf))
        middle = time.perf_counter()
        inputs = (
            torch.as_tensor(atoms.numbers, dtype=torch.long, device=self.device),
            torch.as_tensor(atoms.positions, dtype=self.dtype, device=self.device),
            torch.as_tensor(edges.edge_index, device=self.device),
            torch.as_tensor(edges.shifts, dtype=self.dtype, device=self.device),
        )
        if self.direct_forces:
            with torch.no_grad():
                atom_energy, forces = self.potential(*inputs)
        else:  # −∇E: autograd runs inside the potential
            atom_energy, forces = self.potential(*inputs)
        atom_energy, forces = atom_energy.cpu(), forces.cpu()
        self.timings["neighbors"] += middle - start
        self.timings["model"] += time.perf_counter() - middle
        return atom_energy, forces

    def _run_model(self, atoms) -> tuple[torch.Tensor, torch.Tensor]:
        from augkd.models.data import atoms_to_batch

        start = time.perf_counter()
        with torch.no_grad():  # gradient-force models re-enable grad for −∇E themselves
            output = self.model(atoms_to_batch([atoms], dtype=self.dtype).to(self.device))
        self.timings["model"] += time.perf_counter() - start
        return output.atom_energy.detach().cpu(), output.forces.detach().cpu()

    def check_state(self, atoms, tol=1e-15):
        """What changed since the last calculation, among what the model reads (numbers, positions, cell, pbc), by
        exact comparison; ASE's own comparison (~0.5 ms, run on every property call: MD and relaxations ask several
        times per step) only when the atoms are not the same structure with at most new positions."""
        last = self.atoms
        # bytes, not np.array_equal: a quarter of the cost; -0.0 against 0.0 counts as a change (one extra call)
        if (
            last is not None
            and len(last) == len(atoms)
            and last.numbers.tobytes() == atoms.numbers.tobytes()
            and last.cell.array.tobytes() == atoms.cell.array.tobytes()
            and last.pbc.tobytes() == atoms.pbc.tobytes()
        ):
            return [] if last.positions.tobytes() == atoms.positions.tobytes() else ["positions"]
        return super().check_state(atoms, tol)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        kept = self._structure
        if atoms is not None and kept is not None and list(system_changes) == ["positions"] and len(atoms) == len(kept):
            # only positions moved (check_state's answer): update the kept copy, not ASE's full copy (~0.3 ms/step)
            kept.positions[:] = atoms.positions
            self.atoms, self.results = kept, {}
        else:
            super().calculate(atoms, properties, system_changes)
            self._structure = self.atoms
            if len(self.atoms) == 0:
                raise AugkdError("the structure has no atoms")
            if self._warn_unseen_elements:
                self._warn_unseen(self.atoms.numbers)
        atoms = self.atoms
        run = self._run_potential if self.potential is not None else self._run_model
        atom_energy, forces = run(atoms)
        energies = atom_energy.numpy().astype(np.float64)  # summed in float64: MD energy drift needs the digits
        if self._reference is not None:
            energies = energies + self._reference[atoms.numbers]
        energy = float(energies.sum())
        self.timings["calls"] += 1
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": forces.numpy().astype(np.float64),
            "energies": energies,
        }
