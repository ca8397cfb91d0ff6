"""Legacy OCP v1 LMDB: round trips, OC20-style and PyG 1.x rows, refusal of hostile pickles, atomic writes."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from augkd.io.ocp_lmdb import count_ocp_lmdb, read_ocp_lmdb, write_ocp_lmdb
from conftest import cu_adslab

from augkd.records import LabelledFrame
from augkd.safe_pickle import UnsafePickleError

# Positions, cell and forces are stored as float32, as OC20 stored them: compare those to float32 precision.
F32_ATOL = 1e-5


def _slab_frame(seed: int, *, origin: str = "synthetic") -> LabelledFrame:
    rng = np.random.default_rng(seed)
    atoms = cu_adslab(rng)
    n = len(atoms)
    return LabelledFrame(
        atoms=atoms,
        energy=float(rng.normal(-50.0, 5.0)),
        forces=rng.normal(size=(n, 3)),
        data={
            "sid": f"sys-{seed:04d}",
            "fid": seed % 7,
            "origin": origin,
            "teacher": "eqv2-31M",
            "system_seed": 10_000 + seed,
            "relax_step": seed % 5,
            "atom_energy": rng.normal(size=n),
            "features": rng.normal(size=(n, 4)).astype(np.float16),
        },
    )


def _write_raw(path: Path, rows: dict[bytes, bytes]) -> None:
    env = lmdb.open(str(path), subdir=False, map_size=1 << 24, lock=False)
    with env.begin(write=True) as txn:
        for key, value in rows.items():
            txn.put(key, value)
    env.close()


def _assert_same(read: LabelledFrame, written: LabelledFrame) -> None:
    a, b = read.atoms, written.atoms
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=F32_ATOL)
    np.testing.assert_allclose(np.asarray(a.cell), np.asarray(b.cell), rtol=0, atol=F32_ATOL)
    np.testing.assert_array_equal(a.pbc, b.pbc)
    np.testing.assert_array_equal(a.get_tags(), b.get_tags())
    np.testing.assert_array_equal(read.fixed, written.fixed)
    assert read.energy == written.energy  # stored as a Python float: exact
    np.testing.assert_allclose(read.forces, written.forces, rtol=0, atol=F32_ATOL)
    assert read.data.keys() == written.data.keys()
    for key, value in written.data.items():
        if isinstance(value, np.ndarray):
            assert read.data[key].dtype == value.dtype, key
            np.testing.assert_array_equal(read.data[key], value)
        else:
            assert read.data[key] == value and type(read.data[key]) is type(value), key


def test_round_trip_preserves_structure_labels_and_provenance(tmp_path):
    frames = [_slab_frame(seed) for seed in range(3)]
    path = tmp_path / "d1M.lmdb"

    assert write_ocp_lmdb(path, iter(frames)) == 3

    assert sorted(p.name for p in tmp_path.iterdir()) == ["d1M.lmdb"]  # no temp or -lock files left
    assert count_ocp_lmdb(path) == 3
    read = list(read_ocp_lmdb(path))
    assert len(read) == 3
    for got, want in zip(read, frames):
        _assert_same(got, want)
    assert read[0].fixed.sum() == 4 and not read[0].atoms.pbc[2]


def test_rows_are_plain_pyg_data_with_paper_field_names(tmp_path):
    path = tmp_path / "one.lmdb"
    write_ocp_lmdb(path, [_slab_frame(1)])
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        assert pickle.loads(txn.get(b"length")) == 1
        row = pickle.loads(txn.get(b"0"))
    env.close()
    assert isinstance(row, Data)
    assert {"y", "force", "pos", "cell", "atomic_numbers", "natoms", "tags", "fixed", "sid", "fid"} <= set(row.keys())
    assert "energy" not in row and "forces" not in row
    assert row.cell.shape == (1, 3, 3) and row.atomic_numbers.dtype == torch.float32
    assert row.fixed.dtype == torch.float32 and row.tags.dtype == torch.long and row.natoms == 13


def test_directory_reads_files_in_name_order(tmp_path):
    first, second = [_slab_frame(s) for s in (1, 2)], [_slab_frame(s) for s in (3, 4, 5)]
    write_ocp_lmdb(tmp_path / "b.lmdb", second)
    write_ocp_lmdb(tmp_path / "a.lmdb", first)
    (tmp_path / "notes.txt").write_text("not an lmdb")

    assert count_ocp_lmdb(tmp_path) == 5
    assert [f.data["sid"] for f in read_ocp_lmdb(tmp_path)] == [f"sys-{s:04d}" for s in (1, 2, 3, 4, 5)]


@pytest.mark.parametrize("with_length_key", [True, False])
def test_reads_oc20_style_rows(tmp_path, with_length_key):
    # As OC20 S2EF wrote them: int sid, tensor fid, y/force labels, float atomic_numbers and fixed, no pbc,
    # plus the neighbour graph, which the reader drops.
    rows = {}
    for i in range(2):
        n = 3
        row = Data(
            pos=torch.tensor([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 1.5, 1.0 + i]]),
            cell=torch.eye(3).view(1, 3, 3) * 8.0,
            atomic_numbers=torch.tensor([29.0, 29.0, 8.0]),
            natoms=n,
            tags=torch.tensor([0, 1, 2]),
            fixed=torch.tensor([1.0, 0.0, 0.0]),
            sid=2_472_718 + i,
            fid=torch.tensor(i),
            y=-1.25 * (i + 1),
            force=torch.arange(9, dtype=torch.float32).view(3, 3) * (i + 1),
            edge_index=torch.tensor([[0, 1], [1, 0]]),
            cell_offsets=torch.zeros(2, 3),
            distances=torch.tensor([1.5, 1.5]),
        )
        rows[str(i).encode()] = pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL)
    if with_length_key:
        rows[b"length"] = pickle.dumps(2)
    path = tmp_path / "data.0000.lmdb"
    _write_raw(path, rows)

    assert count_ocp_lmdb(path) == 2
    frames = list(read_ocp_lmdb(path))
    assert [f.data for f in frames] == [{"sid": 2_472_718, "fid": 0}, {"sid": 2_472_719, "fid": 1}]
    assert type(frames[1].data["fid"]) is int
    second = frames[1]
    np.testing.assert_array_equal(second.atoms.numbers, [29, 29, 8])
    np.testing.assert_array_equal(second.atoms.pbc, [True, True, True])
    np.testing.assert_array_equal(second.atoms.get_tags(), [0, 1, 2])
    np.testing.assert_array_equal(second.fixed, [True, False, False])
    np.testing.assert_array_equal(second.atoms.positions[2], [0.0, 1.5, 2.0])
    np.testing.assert_array_equal(np.asarray(second.atoms.cell), np.eye(3) * 8.0)
    assert second.energy == -2.5
    np.testing.assert_array_equal(second.forces, np.arange(9).reshape(3, 3) * 2.0)


def test_reads_newer_energy_forces_names(tmp_path):
    row = Data(
        pos=torch.zeros(1, 3),
        cell=torch.eye(3).view(1, 3, 3),
        atomic_numbers=torch.tensor([1.0]),
        natoms=1,
        energy=torch.tensor([0.5]),
        forces=torch.tensor([[0.1, 0.2, 0.3]]),
        sid="x",
        fid=0,
    )
    path = tmp_path / "new.lmdb"
    _write_raw(path, {b"0": pickle.dumps(row), b"length": pickle.dumps(1)})
    (frame,) = read_ocp_lmdb(path)
    assert frame.energy == 0.5 and frame.data == {"sid": "x", "fid": 0}
    np.testing.assert_allclose(frame.forces, [[0.1, 0.2, 0.3]], atol=F32_ATOL)
    assert not frame.fixed.any() and frame.atoms.get_tags().tolist() == [0]


def test_missing_label_names_file_and_key(tmp_path):
    row = Data(pos=torch.zeros(1, 3), cell=torch.eye(3).view(1, 3, 3), atomic_numbers=torch.tensor([1.0]), y=0.0)
    path = tmp_path / "unlabelled.lmdb"
    _write_raw(path, {b"0": pickle.dumps(row), b"length": pickle.dumps(1)})
    with pytest.raises(ValueError, match=r"unlabelled\.lmdb.*b'0'.*force or forces"):
        list(read_ocp_lmdb(path))


def test_row_that_is_not_data_is_rejected(tmp_path):
    path = tmp_path / "odd.lmdb"
    _write_raw(path, {b"0": pickle.dumps(42), b"length": pickle.dumps(1)})
    with pytest.raises(ValueError, match=r"odd\.lmdb.*b'0'.*int, not a PyG Data"):
        list(read_ocp_lmdb(path))


def test_reads_pyg1_rows_whose_fields_live_in_dict(tmp_path):
    # PyG 1.x Data kept its attributes directly in __dict__ and pickled that dict as its state (no `_store`).
    # A PyG 2 Data built without __init__ and given such a __dict__ pickles to the same opcodes: a reference to
    # torch_geometric.data.data.Data plus a BUILD of the field dict, including 1.x's None slots and __num_nodes__.
    legacy = Data.__new__(Data)
    legacy.__dict__.update(
        x=None,
        edge_attr=None,
        face=None,
        __num_nodes__=None,
        pos=torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.2]]),
        cell=torch.eye(3).view(1, 3, 3) * 6.0,
        atomic_numbers=torch.tensor([6.0, 8.0]),
        natoms=2,
        tags=torch.tensor([2, 2]),
        fixed=torch.tensor([0.0, 0.0]),
        sid=17,
        fid=3,
        y=-3.0,
        force=torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]),
    )
    value = pickle.dumps(legacy, protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(RuntimeError, match="older version of PyG"):  # the failure the reader must route around
        pickle.loads(value).pos
    path = tmp_path / "pyg1.lmdb"
    _write_raw(path, {b"0": value, b"length": pickle.dumps(1)})

    (frame,) = read_ocp_lmdb(path)
    assert frame.atoms.get_chemical_symbols() == ["C", "O"]
    assert frame.energy == -3.0 and frame.data == {"sid": 17, "fid": 3}
    np.testing.assert_array_equal(frame.forces[1], [0.0, 0.0, -1.0])
    np.testing.assert_array_equal(frame.atoms.get_tags(), [2, 2])


class _Shell:
    """Pickles to a call of os.system: what a hostile LMDB row would hold."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_refuses_row_naming_a_disallowed_callable(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.lmdb"
    _write_raw(path, {b"0": pickle.dumps(_Shell(f"touch {marker}")), b"length": pickle.dumps(1)})

    with pytest.raises(UnsafePickleError, match=r"hostile\.lmdb.*b'0'"):
        list(read_ocp_lmdb(path))
    assert not marker.exists()


def test_refuses_payload_hidden_in_tensor_storage_bytes(tmp_path):
    # Every pickled tensor names torch.storage._load_from_bytes, whose original runs an unrestricted torch.load
    # on bytes from the pickle. Smuggle the os.system call into those bytes.
    marker = tmp_path / "pwned"
    inner = io.BytesIO()
    torch.save(_Shell(f"touch {marker}"), inner, _use_new_zipfile_serialization=False)

    class _Storage:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (inner.getvalue(),))

    path = tmp_path / "hostile.lmdb"
    _write_raw(path, {b"0": pickle.dumps(_Storage()), b"length": pickle.dumps(1)})

    with pytest.raises(UnsafePickleError):
        list(read_ocp_lmdb(path))
    assert not marker.exists()


def test_failed_write_leaves_nothing_behind(tmp_path):
    bad = _slab_frame(2)
    bad.forces = bad.forces[:-1]  # one row short: rejected mid-write, after a good frame went into the txn
    path = tmp_path / "out.lmdb"

    with pytest.raises(ValueError, match="forces have shape"):
        write_ocp_lmdb(path, [_slab_frame(1), bad])
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_previous_file(tmp_path):
    path = tmp_path / "out.lmdb"
    write_ocp_lmdb(path, [_slab_frame(1)])
    before = path.read_bytes()

    def frames():
        yield _slab_frame(2)
        raise RuntimeError("generator died")

    with pytest.raises(RuntimeError, match="generator died"):
        write_ocp_lmdb(path, frames())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.lmdb"]


def test_rejects_data_keys_that_shadow_ocp_fields(tmp_path):
    frame = _slab_frame(1)
    frame.data["force"] = frame.forces
    with pytest.raises(ValueError, match="'force' clashes"):
        write_ocp_lmdb(tmp_path / "x.lmdb", [frame])
    assert list(tmp_path.iterdir()) == []


def test_empty_input_writes_an_empty_file(tmp_path):
    path = tmp_path / "empty.lmdb"
    assert write_ocp_lmdb(path, []) == 0
    assert count_ocp_lmdb(path) == 0 and list(read_ocp_lmdb(path)) == []


def test_missing_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.lmdb"):
        list(read_ocp_lmdb(tmp_path / "nowhere.lmdb"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        count_ocp_lmdb(tmp_path)
