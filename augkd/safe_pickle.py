"""Restricted unpickling for the pickle files augkd reads (legacy OCP LMDB rows, OC20 bulk databases).

Unpickling runs code named by the file. Only the globals listed here can be named: exact (module, name) pairs,
never whole modules, so that ``builtins.eval`` or ``os.system`` can never be reached through an allowed prefix.
"""

from __future__ import annotations

import io
import pickle
from typing import IO, Any

from augkd.errors import AugkdError

_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        # containers and plain values
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "slice"),
        ("builtins", "complex"),
        ("builtins", "object"),
        ("builtins", "bytearray"),
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("copyreg", "_reconstructor"),
        # numpy arrays and scalars (numpy 1.x and 2.x module paths)
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        # torch tensors
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        # torch.storage._load_from_bytes: see _SUBSTITUTES
        ("torch", "Tensor"),
        ("torch", "Size"),
        ("torch", "device"),
        # torch_geometric Data (PyG 1.x and 2.x layouts)
        ("torch_geometric.data.data", "Data"),
        ("torch_geometric.data.data", "DataEdgeAttr"),
        ("torch_geometric.data.data", "DataTensorAttr"),
        ("torch_geometric.data.storage", "GlobalStorage"),
        ("torch_geometric.data.storage", "BaseStorage"),
        # ASE structures (OC20 bulks.pkl)
        ("ase.atoms", "Atoms"),
        ("ase.atom", "Atom"),
        ("ase.cell", "Cell"),
        ("ase.constraints", "FixAtoms"),
        ("ase.constraints.fix_atoms", "FixAtoms"),  # where current ASE (3.29) defines FixAtoms
        ("ase.calculators.calculator", "Parameters"),  # dict subclass every pickled ASE calculator carries
        ("ase.calculators.singlepoint", "SinglePointCalculator"),
        ("ase.calculators.singlepoint", "SinglePointDFTCalculator"),
        ("ase.outputs", "Properties"),
    }
)
_TORCH_STORAGE_SUFFIX = "Storage"  # torch.FloatStorage, torch.LongStorage, ... (legacy typed storages)


class UnsafePickleError(AugkdError, pickle.UnpicklingError):
    """The pickle names a class or function outside augkd's allowlist."""


def _load_storage_from_bytes(b: bytes) -> Any:
    """Stand-in for ``torch.storage._load_from_bytes``, which every pickled tensor names for its storage.

    The original runs ``torch.load(..., weights_only=False)`` on bytes taken from the pickle: a second,
    unrestricted unpickle that would run ``os.system`` hidden inside them. torch's weights-only loader reads the
    same legacy storage bytes without that power.
    """
    import torch  # only pickles that hold tensors pay for importing torch

    try:
        storage = torch.load(io.BytesIO(b), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise UnsafePickleError(f"refusing tensor storage bytes: {exc}") from exc
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(f"tensor storage bytes hold a {type(storage).__name__}, not a storage")
    return storage


def _calculator_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr``, which every pickled ASE calculator names once.

    ASE (3.21 and later) sets ``calc.get_spin_polarized = calc._deprecated_get_spin_polarized``, a bound method
    that pickles as ``getattr(calc, "_deprecated_get_spin_polarized")``. A general getattr would reach anything
    from an allowed object (``__class__``, ``__init__.__globals__``, ...), so only that one harmless name on an ASE
    calculator is served.
    """
    from ase.calculators.calculator import BaseCalculator

    if name != "_deprecated_get_spin_polarized" or not isinstance(obj, BaseCalculator):
        raise UnsafePickleError(f"refusing getattr({type(obj).__name__}, {name!r})")
    return getattr(obj, name)


# Allowed names that resolve to a safe stand-in instead of the original.
_SUBSTITUTES = {
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("builtins", "getattr"): _calculator_getattr,  # OC20 bulks.pkl atoms may carry a SinglePoint(DFT)Calculator
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SUBSTITUTES:
            return _SUBSTITUTES[module, name]
        allowed = (module, name) in _ALLOWED or (
            module == "torch" and name.endswith(_TORCH_STORAGE_SUFFIX) and name[0].isupper()
        )
        if not allowed:
            raise UnsafePickleError(f"refusing to unpickle {module}.{name}: not in augkd's allowlist")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing persistent id {pid!r}")


def restricted_load(file: IO[bytes]) -> Any:
    """``pickle.load`` that only rebuilds allowlisted classes; raises UnsafePickleError otherwise."""
    return _RestrictedUnpickler(file).load()


def restricted_loads(data: bytes) -> Any:
    return restricted_load(io.BytesIO(data))
