"""The inputs of ``augkd relax`` / ``augkd md``: the model (a student file or a teacher spec, as one ASE
calculator), the elements it covers, and the structure.

``--model`` takes a student (an exported ``student.pt``, a checkpoint, a run directory) or any teacher spec
(``chgnet``, ``sevennet``, ``emt``, ``ckpt:<path>``, ``ase:...``, ``fairchem:...``), so a student and its teacher
are compared with one command.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.data import atomic_numbers, chemical_symbols

from augkd.errors import AugkdError

@dataclass
class SimulationModel:
    """A calculator and what the runners must know about it."""

    calculator: Calculator
    name: str
    species: frozenset[int] | None  # atomic numbers it was trained on / covers (None: unknown)
    conservative: bool | None  # forces are −∇E (None: unknown)


def load_simulation_model(
    spec: str, device: str = "auto", threads: int | None = None, skin: float | None = None
) -> SimulationModel:
    """A student from a path, else a teacher from its spec; one-line errors for anything else."""
    from augkd.calculator import AugkdCalculator
    from augkd.threads import set_threads

    path = Path(spec)
    if path.exists():
        calculator = AugkdCalculator(path, device=device, threads=threads, skin=skin, warn_unseen=False)
        return SimulationModel(calculator, f"{calculator.model_name} ({path})", calculator.species,
                               not calculator.direct_forces)
    from augkd.teachers import TeacherSpec
    from augkd.teachers.spec import BACKENDS

    if spec.partition(":")[0] not in BACKENDS:
        raise AugkdError(
            f"--model {spec}: no such file, and not a teacher spec (chgnet[:version], sevennet[:model], emt, "
            "ckpt:<path>, ase:<module.Class>, fairchem:<path>)"
        )
    set_threads(threads)
    teacher = TeacherSpec(spec).load(device)
    species = None if teacher.elements is None else frozenset(atomic_numbers[s] for s in teacher.elements)
    # CHGNet, SevenNet, EMT and augkd models with gradient forces say −∇E; other ASE calculators and fairchem: unknown
    return SimulationModel(teacher.calculator(), teacher.identity.name, species, teacher.conservative)


def check_species(model: SimulationModel, atoms: Atoms, allow_unseen: bool) -> None:
    """Refuse (or, with ``allow_unseen``, warn about) elements of ``atoms`` outside the model's species."""
    if model.species is None:
        return
    unseen = sorted(set(int(z) for z in atoms.numbers) - model.species)
    if not unseen:
        return
    symbols = ", ".join(chemical_symbols[z] for z in unseen)
    message = f"{model.name} was not trained on {symbols}"
    if not allow_unseen:
        raise AugkdError(f"{message} (pass --allow-unseen to run anyway)")
    warnings.warn(message, stacklevel=2)


def read_structure(path: str | Path) -> Atoms:
    """The structure in ``path`` (the last image of a trajectory), read by ASE."""
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise AugkdError(f"no structure file at {path}")
    try:
        atoms = read(path)
    except Exception as error:  # ASE raises many types for unreadable files (ValueError, KeyError, StopIteration...)
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise AugkdError(f"{path}: ASE cannot read a structure from it ({type(error).__name__}: {first})") from None
    if isinstance(atoms, list):
        atoms = atoms[-1]
    if len(atoms) == 0:
        raise AugkdError(f"{path}: the structure has no atoms")
    return atoms
