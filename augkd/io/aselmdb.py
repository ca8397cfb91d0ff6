"""Read and write one ``.aselmdb`` shard: the format fairchem's ``AseDBDataset`` reads.

The files are ordinary ``ase_db_backends.aselmdb`` databases (``ase.db.connect(path)`` and fairchem read them):
an LMDB file (``subdir=False``) mapping ``str(id)`` (ids 1, 2, ...) to the zlib-compressed ASE-JSON of the row dict,
plus a ``nextid`` key (and ``deleted_ids`` / ``metadata`` when ASE wrote them). Each row holds what
``db.write(atoms_with_SinglePointCalculator, data=...)`` stores: numbers, positions, unique_id, pbc, cell, tags,
calculator ``unknown`` with energy and forces (on all atoms, unconstrained), ctime, user, mtime, data, constraints.

Going through the ASE backend costs most of the time in Python's ``json`` module, in zlib at its default level and, on
reading, in ``row.toatoms()`` (a SinglePointCalculator that copies the atoms). Here the row dict is built directly,
serialized with ``orjson`` into the same JSON document ASE's encoder writes (arrays as
``{"__ndarray__": [shape, dtype, flat]}``; only the spacing and float spelling differ, e.g. ``1e-05`` vs ``0.00001``,
both parse to the same float), compressed at zlib level 1 (``zlib.decompress`` reads every level) and put into LMDB
in one transaction. Anything the fast encoder cannot reproduce exactly (non-finite floats, non-string dict keys,
ints beyond 64 bits, objects with ``todict``, datetimes, complex numbers, ...) makes that row go through ASE's own
encoder instead. Reading parses with ``orjson`` and then takes ASE's decoding steps (its ``object_hook`` bottom up,
int-like keys to ints, ``numpyfy``; then the backend's lists of calculator properties to arrays); documents that
``orjson`` could read differently (``NaN``, integers of 19+ digits, lone surrogates) go to ASE's decoder.
"""

from __future__ import annotations

import os
import zlib
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator

import lmdb
import numpy as np
import orjson
from ase import Atoms
from ase.calculators.calculator import all_properties
from ase.db.core import now
from ase.db.row import AtomsRow
from ase.io.jsonio import create_ndarray, intkey, numpyfy, object_hook
from ase.io.jsonio import decode as ase_decode
from ase.io.jsonio import encode as ase_encode

from augkd.errors import AugkdError
from augkd.records import LabelledFrame

#: zlib level of the row values. Level 1 is ~2x faster than the default 6 on these rows for ~3% more bytes (and no
#: more LMDB pages: a ~4.4 kB value takes two 4 kB overflow pages either way).
ZLIB_LEVEL = 1

# The backend's environment settings (ase_db_backends.aselmdb.LMDBDatabase._open_lmdb_env).
_MAP_SIZE = 2**41


def remove_lmdb(path: str | Path) -> None:
    """Remove an LMDB file and the ``-lock`` file lmdb keeps beside it."""
    for name in (str(path), f"{path}-lock"):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


# -- writing ---------------------------------------------------------------------------------------------------------


def write_aselmdb(path: str | Path, frames: Iterable[LabelledFrame]) -> int:
    """Write frames to a new ``.aselmdb`` file in one transaction; returns the number of rows.

    Refuses an existing path. On any error (a frame with forces of the wrong shape, say) the transaction is aborted
    and the file is removed: the caller writes to a temporary name and renames the complete file.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    count = 0
    try:
        # No lmdb lock file: a shard is written by exactly one process, into a private temporary name.
        env = lmdb.open(str(path), map_size=_MAP_SIZE, subdir=False, meminit=False, lock=False)
        try:
            with env.begin(write=True) as txn:  # commits on success, aborts on an exception
                user = os.getenv("USER")
                put = txn.put
                for frame in frames:
                    count += 1
                    put(str(count).encode("ascii"), zlib.compress(_encode_row(frame, user), ZLIB_LEVEL))
                if count:
                    # what the backend leaves after `count` writes: the next id, as compressed ASE-JSON
                    put(b"nextid", zlib.compress(ase_encode(count + 1).encode("utf-8")))
        finally:
            env.close()
    except BaseException:
        remove_lmdb(path)
        raise
    return count


def _encode_row(frame: LabelledFrame, user: str | None) -> bytes:
    """The JSON document ASE's backend stores for ``db.write(atoms_with_SinglePointCalculator, data=frame.data)``."""
    atoms = frame.atoms
    natoms = len(atoms)
    forces = np.asarray(frame.forces, dtype=np.float64)
    if forces.shape != (natoms, 3):
        raise ValueError(
            f"forces of shape {forces.shape} for {natoms} atoms (sid {frame.data.get('sid')!r}, "
            f"fid {frame.data.get('fid')!r}); expected ({natoms}, 3)"
        )
    energy = float(frame.energy)
    mtime = now()
    # Key order as the backend writes it: atoms2dict, then calculator, results, ctime/user, mtime, data, constraints.
    row: dict[str, Any] = {
        "numbers": atoms.numbers,
        "positions": atoms.positions,
        "unique_id": os.urandom(16).hex(),
        "pbc": atoms.pbc,
        "cell": atoms.cell.array,
    }
    arrays = atoms.arrays
    for key in ("initial_magmoms", "initial_charges", "masses"):
        if key in arrays:
            row[key] = arrays[key]
    row["tags"] = atoms.get_tags()  # always stored (zeros when unset): fairchem reads them
    if "momenta" in arrays:
        row["momenta"] = arrays["momenta"]
    row["calculator"] = "unknown"  # what ASE records for a SinglePointCalculator
    row["calculator_parameters"] = {}
    row["energy"] = energy
    row["forces"] = forces
    row["ctime"] = mtime
    row["user"] = user
    row["mtime"] = mtime
    row["data"] = frame.data if frame.data else {}
    if atoms.constraints:
        row["constraints"] = [constraint.todict() for constraint in atoms.constraints]
    try:
        return orjson.dumps(_plain(row))
    except (_NotPlain, TypeError):  # orjson.JSONEncodeError is a TypeError
        return ase_encode(row).encode("utf-8")


class _NotPlain(Exception):
    """An object whose JSON the fast encoder would not write exactly as ASE's encoder does."""


@lru_cache(maxsize=None)
def _dtype_name(dtype: np.dtype) -> str | None:
    # ASE writes str(dtype); the fast path takes booleans, integers and reals (their tolist() are JSON scalars).
    return str(dtype) if dtype.kind in "biuf" else None


_SCALARS = frozenset((str, int, bool, type(None)))  # written alike by json and orjson


def _plain(obj: Any) -> Any:
    """``obj`` with numpy arrays and scalars replaced as ``ase.io.jsonio.default`` replaces them.

    Raises _NotPlain for anything whose JSON from orjson could differ from the standard library's.
    """
    kind = type(obj)
    if kind in _SCALARS:
        return obj
    if kind is float:
        if obj - obj != 0.0:  # nan or +-inf: json writes NaN/Infinity, orjson null
            raise _NotPlain
        return obj
    if kind is np.ndarray:
        name = _dtype_name(obj.dtype)
        if name is None:
            raise _NotPlain
        if obj.dtype.kind == "f" and not np.isfinite(obj).all():
            raise _NotPlain
        return {"__ndarray__": [list(obj.shape), name, obj.ravel().tolist()]}
    if kind is dict:
        out = {}
        for key, value in obj.items():
            if type(key) is not str:
                raise _NotPlain  # json turns keys into strings its own way; let ASE's encoder do it
            out[key] = _plain(value)
        return out
    if kind is list or kind is tuple:
        return [value if type(value) in _SCALARS else _plain(value) for value in obj]
    if isinstance(obj, (np.integer, np.bool_)):
        return _plain(obj.item())
    if isinstance(obj, np.floating):
        return _plain(float(obj))
    raise _NotPlain  # todict() objects, datetimes, complex numbers, subclasses of the builtins, ...


# -- reading ---------------------------------------------------------------------------------------------------------


class DamagedShardError(AugkdError):
    """A shard that cannot be read as it should: named in one line that says what to run."""

    def __init__(self, path: str | Path, reason: str):
        path = Path(path)
        dataset = path.parent.parent if path.parent.name == "shards" else path
        super().__init__(f"{path} is damaged ({reason}): run augkd verify {dataset}")


class MissingShardError(DamagedShardError, FileNotFoundError):
    """A shard file that is not there."""

    def __init__(self, path: str | Path):
        super().__init__(path, "missing")


# what LMDB, zlib, the JSON decoders and a row without labels raise on bytes that are not a sound shard
_DAMAGE = (lmdb.Error, zlib.error, ValueError, KeyError, TypeError, UnicodeDecodeError, IndexError)


@contextmanager
def _damage_named(path: str | Path) -> Iterator[None]:
    """Errors that bytes which are not a sound shard raise become one ``DamagedShardError`` naming ``path``."""
    try:
        yield
    except _DAMAGE as error:
        detail = str(error).splitlines()[0] if str(error) else "unreadable"
        raise DamagedShardError(path, f"{type(error).__name__}: {detail}") from None


def _open_readonly(path: str | Path) -> lmdb.Environment:
    path = Path(path)
    if not path.is_file():
        raise MissingShardError(path)
    # as the backend opens it read-only, and without a lock file: readers never leave anything beside a shard
    with _damage_named(path):
        return lmdb.open(str(path), subdir=False, readonly=True, lock=False, meminit=False, readahead=True)


def _row_ids(txn: lmdb.Transaction) -> list[int]:
    """The backend's row ids: ``range(1, nextid)`` less ``deleted_ids``, in that order."""
    raw = txn.get(b"nextid")
    nextid = int(ase_decode(zlib.decompress(raw).decode("utf-8"))) if raw is not None else 1
    raw = txn.get(b"deleted_ids")
    if raw is None:
        return list(range(1, nextid))
    deleted = {int(i) for i in ase_decode(zlib.decompress(raw).decode("utf-8"))}
    return [i for i in range(1, nextid) if i not in deleted]


def read_aselmdb(path: str | Path) -> Iterator[LabelledFrame]:
    """The rows of one shard, in id (= write) order; also reads files written by plain ASE.

    Bytes that are not a sound shard raise ``DamagedShardError`` naming the file.
    """
    env = _open_readonly(path)
    try:
        with env.begin(buffers=True) as txn:
            with _damage_named(path):
                row_ids = _row_ids(txn)
            for row_id in row_ids:
                yield _read_row(txn, row_id, path)
    finally:
        env.close()


def _read_row(txn: lmdb.Transaction, row_id: int, path: str | Path) -> LabelledFrame:
    with _damage_named(path):
        raw = txn.get(str(row_id).encode("ascii"))
        if raw is None:
            raise KeyError(f"row {row_id} missing")
        return _frame(_decode_row(zlib.decompress(raw)), row_id, path)


def _shard_row_ids(path: str | Path) -> list[int]:
    env = _open_readonly(path)
    try:
        with _damage_named(path), env.begin() as txn:
            return _row_ids(txn)
    finally:
        env.close()


def count_aselmdb(path: str | Path) -> int:
    return len(_shard_row_ids(path))


# A JSON integer of 19 or more digits may lie outside 64 bits, where orjson reads a float and json an int. Such a
# token is a run of 19 digits after a character that is neither a digit nor '.': mapping digits to '0', '.' to
# itself and everything else to ',' turns the test into one substring search (a regex is ~6x slower). Floats never
# match: their integer part has at most 16 digits (17+ are written with an exponent), their fraction follows a '.',
# their exponent has at most 3 digits. A false alarm (19 digits inside a string) only costs ASE's slower decoder.
_DIGIT_RUNS = bytes(48 if 48 <= i <= 57 else 46 if i == 46 else 44 for i in range(256))
_LONG_INT = b"," + b"0" * 19


def _decode_row(text: bytes) -> dict:
    """``ase.io.jsonio.decode(text)`` for a row document, faster: orjson parses, then ASE's three steps follow."""
    if text.translate(_DIGIT_RUNS).find(_LONG_INT) < 0:
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:  # NaN/Infinity, lone surrogates, ...: json reads some of these
            pass
        else:
            return numpyfy(_fix_int_keys(_hooked(obj)))
    return ase_decode(text.decode("utf-8"))


def _hooked(obj: Any) -> Any:
    """What ``json.loads(..., object_hook=ase.io.jsonio.object_hook)`` makes of what orjson parsed (bottom up)."""
    if type(obj) is dict:
        payload = obj.get("__ndarray__")
        if payload is not None and len(obj) == 1 and _flat_scalars(payload):
            return create_ndarray(*payload)  # the hook's result, without walking the flat list
        for key, value in obj.items():
            if type(value) is dict or type(value) is list:
                obj[key] = _hooked(value)
        return object_hook(obj)
    if type(obj) is list:
        return [_hooked(value) if type(value) is dict or type(value) is list else value for value in obj]
    return obj


def _flat_scalars(payload: Any) -> bool:
    """An ``__ndarray__`` payload [shape, dtype, flat] as ASE writes it for a non-object array: nothing to hook."""
    return type(payload) is list and len(payload) == 3 and type(payload[2]) is list and payload[1] != "object"


_intkey = lru_cache(maxsize=65536)(intkey)  # the same few key names in every row; int() raising is slow


def _fix_int_keys(obj: Any) -> Any:
    """``ase.io.jsonio.fix_int_keys_in_dicts`` with a memoized ``intkey``."""
    if isinstance(obj, dict):
        return {_intkey(key): _fix_int_keys(value) for key, value in obj.items()}
    return obj


def _frame(dct: dict, row_id: int, path: str | Path) -> LabelledFrame:
    """The frame ``row.toatoms()`` would give for the backend's row, without the SinglePointCalculator round trip."""
    for key in all_properties:  # as the backend's _get_row does
        if key in dct and isinstance(dct[key], list):
            dct[key] = np.array(dct[key])
    dct["id"] = row_id
    row = AtomsRow(dct)
    if "energy" not in dct or "forces" not in dct:
        raise ValueError(f"row {row_id} of {path} has no energy or no forces")
    atoms = Atoms(
        numbers=row.numbers,
        positions=row.positions,
        cell=row.cell,
        pbc=row.pbc,
        magmoms=row.get("initial_magmoms"),
        charges=row.get("initial_charges"),
        tags=row.get("tags"),
        masses=row.get("masses"),
        momenta=row.get("momenta"),
        constraint=row.constraints,
    )
    return LabelledFrame(
        atoms=atoms,
        energy=float(row.energy),
        forces=np.asarray(row.forces, dtype=np.float64),
        data=dict(row.data),
    )


class AselmdbReader:
    """Random access to the rows of one shard (for training); the LMDB is opened lazily in each process."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._env: lmdb.Environment | None = None
        self._pid = -1
        self._ids = _shard_row_ids(self.path)

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> LabelledFrame:
        if self._env is None or self._pid != os.getpid():  # an LMDB handle must not cross a fork
            self._env = _open_readonly(self.path)
            self._pid = os.getpid()
        with self._env.begin(buffers=True) as txn:
            return _read_row(txn, self._ids[index], self.path)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_env": None, "_pid": -1}
