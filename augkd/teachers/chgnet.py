"""CHGNet (weights ship inside the ``chgnet`` wheel; works offline)."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

from ase.data import chemical_symbols

from augkd.errors import ConfigError
from augkd.teachers.interface import CalculatorTeacher, TeacherIdentity, sha256_file

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


def load_chgnet_teacher(version: str = DEFAULT_VERSION, device: str = "cpu") -> CalculatorTeacher:
    weights = chgnet_weights_path(version)
    from chgnet.model import CHGNet, CHGNetCalculator

    # chgnet announces itself on stdout and warns on every call about a tensor copy of its own; neither helps.
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
    with contextlib.redirect_stdout(io.StringIO()):
        model = CHGNet.from_file(str(weights), verbose=False)
        calculator = CHGNetCalculator(model, use_device=device)
    identity = TeacherIdentity(
        name=f"chgnet-{version}", kind="chgnet", checkpoint=str(weights), weights_sha256=sha256_file(weights)
    )
    return CalculatorTeacher(identity, calculator, elements=CHGNET_ELEMENTS)
