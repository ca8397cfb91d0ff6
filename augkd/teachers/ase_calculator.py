"""Any ASE calculator as a teacher: ``ase:<module>.<Class>`` plus keyword arguments, and ASE's EMT."""

from __future__ import annotations

import importlib
import json

from ase.calculators.calculator import Calculator

from augkd.errors import ConfigError
from augkd.hashing import sha256_text
from augkd.teachers.base import CalculatorTeacher
from augkd.teachers.interface import TeacherIdentity

# EMT's parameter table covers these elements only (ase.calculators.emt.parameters).
EMT_ELEMENTS = frozenset({"Ag", "Al", "Au", "C", "Cu", "H", "N", "Ni", "O", "Pd", "Pt"})


def load_ase_teacher(import_path: str, kwargs: dict | None = None) -> CalculatorTeacher:
    """``import_path`` is ``package.module.ClassName``; the class is instantiated with ``kwargs``."""
    kwargs = dict(kwargs or {})
    module_name, _, class_name = import_path.rpartition(".")
    if not module_name:
        raise ConfigError(f"teacher 'ase:{import_path}' must name module.ClassName")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"teacher 'ase:{import_path}': cannot import {module_name} ({exc})") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Calculator)):
        raise ConfigError(f"teacher 'ase:{import_path}': {class_name} is not an ASE Calculator class in {module_name}")
    try:
        calculator = cls(**kwargs)
    except Exception as exc:  # the calculator's own validation: report it in one line
        raise ConfigError(f"teacher 'ase:{import_path}' rejected kwargs {kwargs}: {exc}") from None
    if import_path == "ase.calculators.emt.EMT":
        return emt_teacher(calculator)
    # No weights: the identity is the calculator class and its arguments.
    identity = TeacherIdentity(
        name=class_name.lower(),
        kind="ase",
        checkpoint=None,
        weights_sha256=sha256_text(json.dumps({"class": import_path, "kwargs": kwargs}, sort_keys=True, default=str)),
    )
    return CalculatorTeacher(identity, calculator, elements=None)


def emt_teacher(calculator: Calculator | None = None) -> CalculatorTeacher:
    from ase.calculators import emt

    # EMT's "weights" are its parameter table; hash it so that a changed table shows in provenance.
    table = json.dumps({k: list(v) for k, v in sorted(emt.parameters.items())}, default=float)
    identity = TeacherIdentity(name="emt", kind="ase", checkpoint=None, weights_sha256=sha256_text(table))
    return CalculatorTeacher(identity, calculator or emt.EMT(), elements=EMT_ELEMENTS, conservative=True)
