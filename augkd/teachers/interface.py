"""The Teacher protocol: a named object that labels structures.

Like an ASE Calculator, a caller asks for properties of an ``Atoms`` and never needs to know which backend is
behind it. ``calculator()`` hands out an ASE calculator for code that drives ASE (optimizers, MD).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator


@dataclass(frozen=True)
class TeacherIdentity:
    """Provenance of a teacher: enough to tell two teachers apart and to find the weights again."""

    name: str  # e.g. "chgnet-0.3.0", "emt"
    kind: str  # backend: "chgnet", "sevennet", "ase", ...
    checkpoint: str | None = None  # weights file, when there is one
    weights_sha256: str | None = None  # sha256 of the weights (or of the parameters that define the model)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Labels:
    """What a teacher says about one structure."""

    energy: float  # eV, total
    forces: np.ndarray  # (N, 3) eV/Å, unconstrained
    atom_energy: np.ndarray | None = None  # (N,) eV, when the teacher provides it
    features: dict[str, np.ndarray] = field(default_factory=dict)  # named hidden features


@runtime_checkable
class Teacher(Protocol):
    identity: TeacherIdentity
    #: chemical symbols the teacher can label; None means any
    elements: frozenset[str] | None

    def label(self, atoms: Atoms, properties: Sequence[str] = ("energy", "forces")) -> Labels: ...

    def calculator(self) -> Calculator: ...


class CalculatorTeacher:
    """A teacher backed by one ASE calculator: labels come from ``get_potential_energy``/``get_forces``."""

    def __init__(self, identity: TeacherIdentity, calculator: Calculator, elements: frozenset[str] | None):
        self.identity = identity
        self.elements = elements
        self._calculator = calculator

    def calculator(self) -> Calculator:
        return self._calculator

    def label(self, atoms: Atoms, properties: Sequence[str] = ("energy", "forces")) -> Labels:
        unsupported = set(properties) - {"energy", "forces"}
        if unsupported:
            raise ValueError(f"teacher {self.identity.name} cannot provide {sorted(unsupported)}")
        atoms = atoms.copy()
        atoms.calc = self._calculator
        energy = float(atoms.get_potential_energy())
        forces = np.array(atoms.get_forces(apply_constraint=False), dtype=np.float64)
        return Labels(energy=energy, forces=forces)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity.name})"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
