""".aselmdb shards: round trips, readability by plain ASE and by fairchem, the fast JSON paths against ASE's own
encoder/decoder, files written by plain ASE, atomic writes."""

from __future__ import annotations

import datetime
import sys
import zlib
from pathlib import Path

import lmdb
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io.jsonio import decode as ase_decode
from ase.io.jsonio import encode as ase_encode

from augkd.io.aselmdb import (
    _decode_row,
    _encode_row,
    count_aselmdb,
    read_aselmdb,
    remove_lmdb,
    write_aselmdb,
)
from conftest import cu_adslab

from augkd.records import LabelledFrame, fixed_mask


def _slab_frame(seed: int, *, extras: bool = True) -> LabelledFrame:
    rng = np.random.default_rng(seed)
    atoms = cu_adslab(rng)
    atoms.get_tags()
    n = len(atoms)
    data = {
        "sid": f"sys-{seed:04d}",
        "fid": seed % 7,
        "origin": "synthetic",
        "teacher": "eqv2-31M",
        "system_seed": 10_000 + seed,
        "relax_step": seed % 5,
        "bulk": "mp-30",
        "millers": [1, 1, 1],
        "adsorbate": "*O",
    }
    if extras:
        data["atom_energy"] = rng.normal(size=n)
        data["features"] = rng.normal(size=(n, 4)).astype(np.float16)
    return LabelledFrame(
        atoms=atoms,
        energy=float(rng.normal(-50.0, 5.0)),
        forces=rng.normal(size=(n, 3)),  # non-zero on the fixed atoms too
        data=data,
    )


def _assert_same(a, b, path="obj"):
    """Deep equality of decoded objects: types, array dtypes/shapes/values (NaN equal to NaN)."""
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{path}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for key in a:
            _assert_same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def _assert_data_equal(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, np.ndarray):
            assert isinstance(got[key], np.ndarray) and got[key].dtype == value.dtype, key
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        else:
            assert got[key] == value, key


def _assert_frames_equal(got: LabelledFrame, want: LabelledFrame) -> None:
    # JSON keeps the shortest repr of every float64: everything comes back bit for bit
    np.testing.assert_array_equal(got.atoms.numbers, want.atoms.numbers)
    np.testing.assert_array_equal(got.atoms.positions, want.atoms.positions)
    np.testing.assert_array_equal(got.atoms.cell.array, want.atoms.cell.array)
    np.testing.assert_array_equal(got.atoms.pbc, want.atoms.pbc)
    np.testing.assert_array_equal(got.atoms.get_tags(), want.atoms.get_tags())
    np.testing.assert_array_equal(got.fixed, want.fixed)
    assert got.energy == want.energy
    assert got.forces.shape == want.forces.shape
    np.testing.assert_array_equal(got.forces, want.forces)
    assert got.atoms.calc is None
    _assert_data_equal(got.data, want.data)


def test_round_trip(tmp_path: Path) -> None:
    frames = [_slab_frame(i) for i in range(12)]
    path = tmp_path / "shard.aselmdb"
    assert write_aselmdb(path, frames) == 12
    assert not Path(f"{path}-lock").exists()
    back = list(read_aselmdb(path))
    assert len(back) == 12
    for got, want in zip(back, frames):
        _assert_frames_equal(got, want)
    assert fixed_mask(back[0].atoms).sum() == 4 and np.abs(back[0].forces[back[0].fixed]).sum() > 0
    assert count_aselmdb(path) == 12


def test_plain_ase_reads_the_rows(tmp_path: Path) -> None:
    import ase.db
    from ase_db_backends.aselmdb import LMDBDatabase

    frames = [_slab_frame(i) for i in range(5)]
    path = tmp_path / "shard.aselmdb"
    write_aselmdb(path, frames)

    db = ase.db.connect(path, use_lock_file=False)
    assert isinstance(db, LMDBDatabase)
    assert len(db) == 5 and db.ids == [1, 2, 3, 4, 5]
    for row, want in zip(db.select(), frames):
        atoms = row.toatoms()
        np.testing.assert_array_equal(atoms.numbers, want.atoms.numbers)
        np.testing.assert_array_equal(atoms.positions, want.atoms.positions)
        np.testing.assert_array_equal(atoms.cell.array, want.atoms.cell.array)
        np.testing.assert_array_equal(atoms.pbc, want.atoms.pbc)
        np.testing.assert_array_equal(atoms.get_tags(), want.atoms.get_tags())
        assert [type(c).__name__ for c in atoms.constraints] == ["FixAtoms"]
        np.testing.assert_array_equal(atoms.constraints[0].get_indices(), np.flatnonzero(want.fixed))
        assert row.energy == want.energy and atoms.get_potential_energy() == want.energy
        np.testing.assert_array_equal(row.forces, want.forces)
        np.testing.assert_array_equal(atoms.get_forces(apply_constraint=False), want.forces)
        assert np.all(atoms.get_forces()[want.fixed] == 0)  # ASE applies FixAtoms by default
        _assert_data_equal(dict(row.data), want.data)
        assert row.calculator == "unknown" and row.calculator_parameters == {}
        assert isinstance(row.ctime, float) and isinstance(row.mtime, float) and len(row.unique_id) == 32
    assert db.get(id=3).data["sid"] == frames[2].data["sid"]
    db.close()


def test_rows_decode_as_plain_ase_writes_them(tmp_path: Path) -> None:
    """The stored documents decode (with ASE's decoder) to what ASE itself stores for the same atoms and data."""
    import ase.db

    frame = _slab_frame(3)
    ours, theirs = tmp_path / "ours.aselmdb", tmp_path / "ase.aselmdb"
    write_aselmdb(ours, [frame])
    atoms = frame.atoms.copy()
    atoms.calc = SinglePointCalculator(atoms, energy=frame.energy, forces=frame.forces)
    db = ase.db.connect(theirs, use_lock_file=False)
    with db:
        db.write(atoms, data=frame.data)

    def stored(path):
        env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
        with env.begin() as txn:
            out = {bytes(k): ase_decode(zlib.decompress(v).decode()) for k, v in txn.cursor()}
        env.close()
        return out

    mine, plain = stored(ours), stored(theirs)
    assert set(mine) == set(plain) == {b"1", b"nextid"}
    assert mine[b"nextid"] == plain[b"nextid"] == 2
    a, b = mine[b"1"], plain[b"1"]
    for key in ("unique_id", "ctime", "mtime", "user"):  # per-write values
        assert type(a.pop(key)) is type(b.pop(key)) or key == "user"
    assert list(a) == list(b)
    _assert_same(a, b)


TRICKY_DATA = {
    "nan": float("nan"),
    "inf_array": np.array([1.0, np.inf, -np.inf]),
    "int_keys": {1: "a", "2": "b", "x": {3: [1, 2]}},
    "big": 2**70,
    "neg_big": -(2**65),
    "u64": np.array([2**64 - 1], dtype=np.uint64),
    "nested": [{"1": np.arange(3)}, [np.zeros((0, 3))], ("t", None, True)],
    "scalars": [np.float64(0.1), np.int32(-4), np.bool_(True), np.float32(0.1)],
    "f32": np.linspace(0, 1, 7, dtype=np.float32),
    "f16": np.array([[0.1, 2.0]], dtype=np.float16),
    "bools": np.array([True, False]),
    "big_endian_inf": np.array([1.0, np.inf, np.nan], dtype=">f8"),
    "zero_d": np.array(5.0),
    "small": [1e-05, 1e16, -0.0, 5e-324, 1.7976931348623157e308, 0.000123456789012345],
    "text": "héllo \u2603 \"quoted\" \\ 1234567890123456789012",
    "when": datetime.datetime(2024, 5, 6, 7, 8, 9, 123456),
    "complex": 1 + 2j,
    "carray": np.array([1 + 1j, 2 - 3j]),
    "strs": np.array(["ab", "c"]),
}


@pytest.mark.parametrize("key", ["plain", *TRICKY_DATA])
def test_fast_paths_equal_ase_json(key: str) -> None:
    """Our encoder's document decodes (by ASE) to what ASE's encoding decodes to; our decoder equals ASE's."""
    frame = _slab_frame(1)
    if key != "plain":
        frame.data = {"sid": "s", key: TRICKY_DATA[key]}
    text = _encode_row(frame, "me")
    decoded = ase_decode(text.decode())
    reference = ase_decode(ase_encode({**decoded, "data": frame.data}))
    _assert_same(decoded["data"], reference["data"])
    _assert_same(_decode_row(text), decoded)
    # and on documents ASE's encoder wrote (json spacing, NaN, 1e-05 spelling, ...)
    ase_text = ase_encode(decoded).encode()
    _assert_same(_decode_row(ase_text), ase_decode(ase_text.decode()))


@pytest.mark.parametrize(
    "document",
    [
        # ASE hooks an object before it fixes int-like keys, and never fixes keys inside lists or objects
        '{"data": {"a": {"__ase_objtype__": "atoms", "numbers": [1], "positions": [[0, 0, 0]], '
        '"cell": [[0, 0, 0], [0, 0, 0], [0, 0, 0]], "pbc": [false, false, false], "info": {"1": {"2": 3}}}, '
        '"5": [{"6": 7}], "l": [[1, 2], [true]]}}',
        '{"x": {"__ndarray__": [[2], "object", [{"1": 2}, {"__ndarray__": [[1], "int64", [3]]}]]}}',
        '{"x": {"__datetime__": "2024-01-02T03:04:05.000006"}, "c": {"__complex__": [1.0, -2.0]}, "n": NaN}',
        '{"big": 123456789012345678901234567890, "neg": -9223372036854775809, "ok": 9223372036854775807}',
        '{"s": "\\ud800", "f": 1E400, "g": -0, "e": 1e-7}',
        '[1, {"2": [3]}]',
        '7',
    ],
)
def test_decoder_equals_ase_decoder(document: str) -> None:
    got, want = _decode_row(document.encode()), ase_decode(document)
    _assert_same(got, want)
    if isinstance(want, dict) and "data" in want:
        assert got["data"]["a"].info == want["data"]["a"].info == {"1": {"2": 3}}


def test_non_finite_labels_survive(tmp_path: Path) -> None:
    frame = _slab_frame(2, extras=False)
    frame.energy = float("nan")
    frame.forces[0, 0] = np.inf
    path = tmp_path / "nan.aselmdb"
    write_aselmdb(path, [frame])
    (back,) = read_aselmdb(path)
    assert np.isnan(back.energy) and back.forces[0, 0] == np.inf
    np.testing.assert_array_equal(back.forces[1:], frame.forces[1:])


def test_reads_files_written_by_plain_ase(tmp_path: Path) -> None:
    """Ids beyond 9 (keys sort as strings), deleted ids, metadata: read in id order, like the backend."""
    import ase.db

    frames = [_slab_frame(i) for i in range(12)]
    path = tmp_path / "plain.aselmdb"
    db = ase.db.connect(path, use_lock_file=False)
    with db:
        for frame in frames:
            atoms = frame.atoms.copy()
            atoms.calc = SinglePointCalculator(atoms, energy=frame.energy, forces=frame.forces)
            db.write(atoms, data=frame.data)
    db = ase.db.connect(path, use_lock_file=False)
    db.delete([2, 11])
    db.metadata = {"note": "x"}
    db.close()
    keep = [f for i, f in enumerate(frames, start=1) if i not in (2, 11)]
    back = list(read_aselmdb(path))
    assert count_aselmdb(path) == len(back) == 10
    for got, want in zip(back, keep):
        _assert_frames_equal(got, want)


def test_molecule_without_cell_tags_or_constraints(tmp_path: Path) -> None:
    import ase.db
    from ase.build import molecule

    atoms = molecule("H2O")
    frame = LabelledFrame(atoms=atoms, energy=-14.2, forces=np.arange(9.0).reshape(3, 3), data={"sid": "h2o"})
    path = tmp_path / "mol.aselmdb"
    write_aselmdb(path, [frame])
    (back,) = read_aselmdb(path)
    _assert_frames_equal(back, frame)
    assert back.atoms.constraints == [] and not back.atoms.pbc.any() and not back.atoms.cell.any()
    row = ase.db.connect(path, use_lock_file=False).get(id=1)
    assert row.toatoms() == atoms and row.data == {"sid": "h2o"}


def test_empty_shard(tmp_path: Path) -> None:
    path = tmp_path / "empty.aselmdb"
    assert write_aselmdb(path, []) == 0
    assert count_aselmdb(path) == 0 and list(read_aselmdb(path)) == []


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def frames():
        yield _slab_frame(0)
        yield _slab_frame(1)
        bad = _slab_frame(2)
        bad.forces = bad.forces[:-1]
        yield bad
        yield _slab_frame(3)

    path = tmp_path / "bad.aselmdb"
    with pytest.raises(ValueError, match=r"forces of shape \(12, 3\) for 13 atoms.*sys-0002"):
        write_aselmdb(path, frames())
    assert not path.exists() and not Path(f"{path}-lock").exists()
    assert list(tmp_path.iterdir()) == []


def test_refuses_existing_path(tmp_path: Path) -> None:
    path = tmp_path / "shard.aselmdb"
    write_aselmdb(path, [_slab_frame(0)])
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_aselmdb(path, [_slab_frame(1)])
    assert path.read_bytes() == before and count_aselmdb(path) == 1


def test_remove_lmdb(tmp_path: Path) -> None:
    path = tmp_path / "x.aselmdb"
    path.write_bytes(b"")
    Path(f"{path}-lock").write_bytes(b"")
    remove_lmdb(path)
    remove_lmdb(path)  # idempotent
    assert list(tmp_path.iterdir()) == []


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        count_aselmdb(tmp_path / "nope.aselmdb")
    with pytest.raises(FileNotFoundError):
        list(read_aselmdb(tmp_path / "nope.aselmdb"))
    assert list(tmp_path.iterdir()) == []  # reading never creates a file


@pytest.mark.slow
def test_fairchem_reads_the_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nvalchemiops", None)  # no CUDA toolkit probing on CPU
    from fairchem.core.datasets import AseDBDataset

    frames = [_slab_frame(i) for i in range(6)]
    folder = tmp_path / "shards"
    folder.mkdir()
    write_aselmdb(folder / "shard-00000.aselmdb", frames)
    dataset = AseDBDataset({"src": str(folder), "a2g_args": {"r_energy": True, "r_forces": True}})
    assert len(dataset) == 6
    for i, want in enumerate(frames):
        item = dataset[i]
        assert float(item.energy.reshape(-1)[0]) == pytest.approx(want.energy, rel=1e-6)
        np.testing.assert_allclose(item.forces.numpy(), want.forces, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(item.fixed.numpy().astype(bool), want.fixed)
        np.testing.assert_array_equal(item.tags.numpy(), want.atoms.get_tags())
        # fairchem wraps positions into the cell: compare fractional coordinates modulo 1
        shift = want.atoms.cell.scaled_positions(item.pos.numpy().astype(np.float64)) - want.atoms.get_scaled_positions(
            wrap=False
        )
        np.testing.assert_allclose(shift - np.round(shift), 0.0, atol=1e-6)
        sid = item.sid[0] if isinstance(item.sid, list) else item.sid
        assert sid == f"{want.data['sid']}-frame-{want.data['fid']}"  # fairchem appends the frame index
        atoms = dataset.get_atoms(i)
        assert atoms.info["sid"] == want.data["sid"] and atoms.info["fid"] == want.data["fid"]
