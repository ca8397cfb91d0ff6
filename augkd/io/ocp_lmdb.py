"""Legacy OCP v1 LMDB: the paper's format (OC20 S2EF, synthetic d1M), which fairchem 2.x no longer reads.

One LMDB file, keys ``b"0"`` … ``b"N-1"`` plus ``b"length"``, values pickled torch_geometric ``Data``. Values are
always unpickled through :func:`augkd.safe_pickle.restricted_loads`: a row is code until proven otherwise.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import torch
from ase import Atoms
from ase.constraints import FixAtoms
from torch_geometric.data import Data

from augkd.records import LabelledFrame, fixed_mask
from augkd.safe_pickle import UnsafePickleError, restricted_loads

_LENGTH_KEY = b"length"
# LMDB needs its map size up front; on Linux the file only grows as pages are written.
_MAP_SIZE = 1 << 40
# Fields the reader turns into Atoms and labels; everything else (bar graph leftovers) goes to ``data``.
_STRUCTURE_KEYS = frozenset(
    {"pos", "cell", "atomic_numbers", "natoms", "tags", "fixed", "pbc", "y", "energy", "force", "forces"}
)
# Neighbour-graph fields of OC20 files: derived from the structure, rebuilt by whoever trains.
_GRAPH_KEYS = frozenset({"edge_index", "cell_offsets", "distances", "neighbors"})
_SCALAR_KEYS = ("sid", "fid")


def write_ocp_lmdb(path: str | os.PathLike, frames: Iterable[LabelledFrame]) -> int:
    """Write ``frames`` as one legacy OCP LMDB at ``path``, atomically; returns the number of rows.

    Labels go under ``y``/``force`` (the paper's names). Positions, cell and forces are float32 tensors and
    ``atomic_numbers``/``fixed`` float tensors, as OC20 stored them, so rows collate with OC20 rows.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    env = None
    try:
        # lock=False: nobody else knows the temp name, and it leaves no ``-lock`` file behind.
        env = lmdb.open(str(tmp), subdir=False, map_size=_MAP_SIZE, lock=False, meminit=False)
        with env.begin(write=True) as txn:  # one transaction: commits on success, aborts on any error
            count = 0
            for frame in frames:
                txn.put(str(count).encode(), pickle.dumps(_to_data(frame), protocol=pickle.HIGHEST_PROTOCOL))
                count += 1
            txn.put(_LENGTH_KEY, pickle.dumps(count, protocol=pickle.HIGHEST_PROTOCOL))
        env.close()
        env = None
        os.replace(tmp, path)
    except BaseException:
        if env is not None:
            env.close()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        Path(f"{tmp}-lock").unlink(missing_ok=True)
    return count


def read_ocp_lmdb(path: str | os.PathLike) -> Iterator[LabelledFrame]:
    """Rows of one ``.lmdb`` file, or of every ``*.lmdb`` file in a directory (sorted by name), in key order."""
    for file in lmdb_files(path):
        env = _open_readonly(file)
        try:
            with env.begin() as txn:
                for index in range(_length(txn, file)):
                    key = str(index).encode()
                    value = txn.get(key)
                    if value is None:
                        raise ValueError(f"{file}: key {key!r} missing (rows must be numbered 0..length-1)")
                    yield _to_frame(_unpickle(value, file, key), file, key)
        finally:
            env.close()


def count_ocp_lmdb(path: str | os.PathLike) -> int:
    total = 0
    for file in lmdb_files(path):
        env = _open_readonly(file)
        try:
            with env.begin() as txn:
                total += _length(txn, file)
        finally:
            env.close()
    return total


# -- writing ------------------------------------------------------------------------------------------------


def _to_data(frame: LabelledFrame) -> Data:
    atoms = frame.atoms
    n = len(atoms)
    forces = np.asarray(frame.forces, dtype=np.float64)
    if forces.shape != (n, 3):
        raise ValueError(f"sid={frame.data.get('sid')!r}: forces have shape {forces.shape}, expected ({n}, 3)")
    data = Data(
        pos=torch.tensor(atoms.get_positions(), dtype=torch.float32),
        cell=torch.tensor(np.asarray(atoms.get_cell()), dtype=torch.float32).view(1, 3, 3),
        atomic_numbers=torch.tensor(atoms.get_atomic_numbers(), dtype=torch.float32),
        natoms=n,
        tags=torch.tensor(atoms.get_tags(), dtype=torch.long),
        fixed=torch.tensor(fixed_mask(atoms), dtype=torch.float32),
        pbc=torch.tensor(atoms.get_pbc(), dtype=torch.bool).view(1, 3),
        y=float(frame.energy),
        force=torch.tensor(forces, dtype=torch.float32),
    )
    for key, value in frame.data.items():
        if key in _STRUCTURE_KEYS or key in _GRAPH_KEYS or key.startswith("_"):
            raise ValueError(f"data key {key!r} clashes with an OCP field name; rename it")
        if value is not None:  # PyG drops None attributes anyway; a missing key reads back as absent
            data[key] = _encode_extra(key, value)
    return data


def _encode_extra(key: str, value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        try:  # tensors, so that OCP-style collation concatenates per-atom arrays
            return torch.from_numpy(np.array(value))
        except TypeError:  # dtypes torch lacks (strings, ...) stay numpy arrays, which the reader also allows
            return np.array(value)
    if isinstance(value, (str, bytes, bool, int, float, list, tuple, dict)):
        return value
    raise TypeError(f"data[{key!r}] is a {type(value).__name__}; the restricted reader could not load it back")


# -- reading ------------------------------------------------------------------------------------------------


def lmdb_files(path: str | os.PathLike) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.lmdb"))
        if not files:
            raise FileNotFoundError(f"no *.lmdb files in directory {path}")
        return files
    if not path.exists():
        raise FileNotFoundError(f"OCP LMDB not found: {path}")
    return [path]


def _open_readonly(file: Path) -> lmdb.Environment:
    return lmdb.open(str(file), subdir=False, readonly=True, lock=False, readahead=False, meminit=False)


def _length(txn: lmdb.Transaction, file: Path) -> int:
    value = txn.get(_LENGTH_KEY)
    if value is not None:
        return int(_unpickle(value, file, _LENGTH_KEY))
    with txn.cursor() as cursor:
        return sum(1 for key in cursor.iternext(keys=True, values=False) if key.isdigit())


def _unpickle(value: bytes, file: Path, key: bytes) -> Any:
    try:
        return restricted_loads(value)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{file}: key {key!r}: {exc}") from exc


def _fields(obj: Any) -> dict[str, Any] | None:
    """The stored attributes of a PyG ``Data``, whichever PyG pickled it.

    PyG >= 2 keeps them in ``__dict__['_store']``; PyG 1.x pickles put them straight into ``__dict__``, and PyG 2
    refuses attribute access on such objects ("created by an older version of PyG"), so read ``__dict__``.
    """
    if isinstance(obj, dict):
        return obj
    state = getattr(obj, "__dict__", None)
    if state is None:
        return None
    store = state.get("_store")
    if store is not None:
        return dict(vars(store)["_mapping"])
    return {key: value for key, value in state.items() if not key.startswith("_")}


def _to_frame(obj: Any, file: Path, key: bytes) -> LabelledFrame:
    fields = _fields(obj)
    if fields is None:
        raise ValueError(f"{file}: key {key!r}: holds a {type(obj).__name__}, not a PyG Data")
    fields = {name: value for name, value in fields.items() if value is not None}

    def first(*names: str) -> Any:
        for name in names:
            if name in fields:
                return fields[name]
        raise ValueError(f"{file}: key {key!r}: no {' or '.join(names)} field")

    positions = _array(first("pos"), np.float64)
    n = len(positions)
    forces = _array(first("force", "forces"), np.float64)
    if positions.shape != (n, 3) or forces.shape != (n, 3):
        raise ValueError(f"{file}: key {key!r}: pos {positions.shape} and forces {forces.shape} must be ({n}, 3)")
    atoms = Atoms(
        numbers=np.rint(_array(first("atomic_numbers"), np.float64)).astype(int),
        positions=positions,
        cell=_array(first("cell"), np.float64).reshape(3, 3),
        # OC20 files carry no pbc: its slabs were periodic in all three directions.
        pbc=_array(fields["pbc"], bool).reshape(3) if "pbc" in fields else True,
        tags=_array(fields["tags"], np.int64) if "tags" in fields else None,
    )
    if "fixed" in fields:
        fixed = _array(fields["fixed"], np.float64).reshape(-1) > 0.5
        if fixed.any():
            atoms.set_constraint(FixAtoms(indices=np.flatnonzero(fixed)))
    energy = float(_array(first("y", "energy"), np.float64).reshape(()))
    data = {
        name: _decode_extra(value, scalar=name in _SCALAR_KEYS)
        for name, value in fields.items()
        if name not in _STRUCTURE_KEYS and name not in _GRAPH_KEYS
    }
    return LabelledFrame(atoms=atoms, energy=energy, forces=forces, data=data)


def _array(value: Any, dtype: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _decode_extra(value: Any, scalar: bool) -> Any:
    """Tensors back to numpy; 0-d tensors and numpy scalars (and one-element sid/fid) to Python scalars."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray) and (value.ndim == 0 or (scalar and value.size == 1)):
        return value.reshape(()).item()
    if isinstance(value, np.generic):
        return value.item()
    return value
