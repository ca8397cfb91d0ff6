"""SevenNet (optional extra ``augkd[sevennet]``; SevenNet-0 weights ship inside the ``sevenn`` wheel)."""

from __future__ import annotations

import warnings

from ase.data import chemical_symbols

from augkd.errors import ConfigError
from augkd.teachers.interface import CalculatorTeacher, TeacherIdentity, sha256_file

DEFAULT_MODEL = "7net-0"
# Names that resolve to weights inside the wheel; others (omat, mf-ompa, omni, ...) would download.
SHIPPED_MODELS = ("7net-0", "sevennet-0", "7net-l3i5", "sevennet-l3i5", "7net-mf-0", "sevennet-mf-0")


def load_sevennet_teacher(model: str = DEFAULT_MODEL, device: str = "cpu") -> CalculatorTeacher:
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
    return CalculatorTeacher(identity, calculator, elements=elements)
