import os
import pickle
import sys

sys.modules.setdefault("nvalchemiops", None)  # keeps fairchem's import from warning about CUDA ops on CPU

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.data import covalent_radii
from ase.neighborlist import neighbor_list

from augkd.systems.bulks import (
    BulkEntry,
    BulkFileError,
    builtin_bulks,
    bulk_fingerprint,
    filter_bulks,
    load_bulks,
)

EMT_ELEMENTS = {"Ag", "Al", "Au", "Cu", "Ni", "Pd", "Pt"}


@pytest.fixture(scope="module")
def library():
    return builtin_bulks()


def _by_name(entries):
    return {e.name: e for e in entries}


# ---------------------------------------------------------------------------------------------- built-in library


def test_library_size_names_and_cells(library):
    assert 40 <= len(library) <= 70
    names = [e.name for e in library]
    assert len(set(names)) == len(names)
    for e in library:
        assert isinstance(e, BulkEntry) and e.source.startswith("builtin:")
        assert e.atoms.pbc.all() and e.atoms.cell.volume > 1.0
        assert 1 <= len(e.atoms) <= 8
        assert e.atoms.calc is None and not e.atoms.constraints and not e.atoms.info
        assert e.elements == frozenset(e.atoms.get_chemical_symbols())


def test_library_interatomic_distances_are_physical(library):
    for e in library:
        i, j, d = neighbor_list("ijd", e.atoms, cutoff=5.0, self_interaction=False)
        assert len(d), e.name
        z = e.atoms.numbers
        ratio = d / (covalent_radii[z[i]] + covalent_radii[z[j]])
        closest = np.argmin(d)
        assert ratio.min() >= 0.7, (e.name, ratio.min())
        assert ratio[closest] <= 1.3, (e.name, d[closest], ratio[closest])


def test_library_coverage(library):
    by_name = _by_name(library)
    for symbol in EMT_ELEMENTS:
        assert f"{symbol}-fcc" in by_name
    for name in ("Fe-bcc", "Ru-hcp", "Co-hcp", "W-bcc", "Mg-hcp", "Pb-fcc", "Ba-bcc"):
        assert name in by_name
    for name in ("TiO2-rutile", "RuO2-rutile", "IrO2-rutile", "NiO-rocksalt", "MgO-rocksalt", "ZnO-wurtzite"):
        assert name in by_name
    assert {"Tc", "La", "Ce", "Ne", "Ar"}.isdisjoint(set().union(*(e.elements for e in library)))

    rutile = by_name["TiO2-rutile"].atoms
    assert rutile.get_chemical_formula() == "O4Ti2"
    ti_o = neighbor_list("d", rutile, cutoff=2.1)
    assert np.sum(ti_o < 2.1) == 2 * 2 * 6  # 6 O around each of 2 Ti, counted from both ends
    assert by_name["Cu3Au-L12"].atoms.get_chemical_formula() == "AuCu3"
    assert by_name["NiAl-B2"].atoms.get_volume() == pytest.approx(2.887**3)


def test_filter_emt_subset(library):
    emt = filter_bulks(library, EMT_ELEMENTS)
    assert len(emt) >= 12
    assert all(e.elements <= EMT_ELEMENTS for e in emt)
    binaries = [e for e in emt if len(e.elements) == 2]
    assert len(binaries) >= 5
    assert {"Cu3Au-L12", "Ni3Al-L12", "NiAl-B2", "CuPd-B2", "CuAu-L10"} <= {e.name for e in binaries}
    # order is kept, None keeps everything, unknown symbols are refused
    positions = [e.name for e in library]
    assert [positions.index(e.name) for e in emt] == sorted(positions.index(e.name) for e in emt)
    assert filter_bulks(library, None) == library
    pt_ti_o = filter_bulks(library, ["Pt", "O", "Ti"])
    assert [e.name for e in pt_ti_o] == ["Ti-hcp", "Pt-fcc", "Pt3Ti-L12", "TiO2-rutile"]
    with pytest.raises(ValueError, match="CU"):
        filter_bulks(library, ["CU"])


def test_library_is_deterministic_and_fresh(library):
    again = builtin_bulks()
    assert again == library
    assert [bulk_fingerprint(e.atoms) for e in again] == [bulk_fingerprint(e.atoms) for e in library]
    again[0].atoms.positions += 1.0  # callers get their own copies
    assert builtin_bulks()[0] == library[0]


def test_fingerprint(library):
    prints = [bulk_fingerprint(e.atoms) for e in library]
    assert len(set(prints)) == len(prints)
    assert all(len(p) == 64 and int(p, 16) >= 0 for p in prints)

    cu = bulk("Cu", "fcc", a=3.61)
    ref = bulk_fingerprint(cu)
    moved = cu.copy()
    moved.positions += 1e-9  # below the 1e-6 grid
    assert bulk_fingerprint(moved) == ref
    shifted = cu.copy()
    shifted.positions += cu.cell.sum(axis=0)  # a whole lattice vector: same crystal after wrapping
    assert bulk_fingerprint(shifted) == ref
    assert bulk_fingerprint(bulk("Cu", "fcc", a=3.62)) != ref
    assert bulk_fingerprint(bulk("Ag", "fcc", a=3.61)) != ref


# ---------------------------------------------------------------------------------------------- user bulk files


def _decorated(atoms):
    """A bulk carrying everything load_bulks must strip."""
    atoms = atoms.copy()
    atoms.set_constraint(FixAtoms(indices=[0]))
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((len(atoms), 3)))
    atoms.info["note"] = "x"
    return atoms


def test_load_oc20_pickle(tmp_path):
    db = [
        {"atoms": _decorated(bulk("Cu", "fcc", a=3.61, cubic=True)), "src_id": "mp-30", "bulk_sampling_str": "0/3"},
        {"atoms": _decorated(bulk("NiAl", "cesiumchloride", a=2.887)), "src_id": "mp-1487"},
        {"atoms": bulk("Pt"), "src_id": "mp-30"},  # duplicate id gets a suffix
        {"atoms": bulk("Fe")},  # no src_id
    ]
    path = tmp_path / "bulks.pkl"
    with open(path, "wb") as fh:
        pickle.dump(db, fh)
    entries = load_bulks(path)
    assert [e.name for e in entries] == ["mp-30", "mp-1487", "mp-30_2", "bulk-3"]
    assert [e.source for e in entries] == [f"{path}:{i}" for i in range(4)]
    for e, row in zip(entries, db):
        assert e.atoms.calc is None and not e.atoms.constraints and not e.atoms.info
        assert e.atoms.pbc.all()
        np.testing.assert_allclose(e.atoms.positions, row["atoms"].positions)
        np.testing.assert_allclose(e.atoms.cell, row["atoms"].cell)
        assert bulk_fingerprint(e.atoms) == bulk_fingerprint(row["atoms"])
    assert db[0]["atoms"].constraints  # the caller's objects are untouched
    assert entries[1].elements == {"Ni", "Al"}


def test_load_extxyz_with_three_images(tmp_path):
    images = [bulk("Cu", "fcc", a=3.6), bulk("Ru"), bulk("NiO", "rocksalt", a=4.177)]
    path = tmp_path / "mixed.extxyz"
    ase.io.write(path, images)
    entries = load_bulks(str(path))
    assert [e.name for e in entries] == ["mixed:0", "mixed:1", "mixed:2"]
    assert [e.source for e in entries] == [f"{path}:{i}" for i in range(3)]
    for e, ref in zip(entries, images):
        assert e.atoms.get_chemical_formula() == ref.get_chemical_formula()
        np.testing.assert_allclose(e.atoms.cell, ref.cell, atol=1e-8)


def test_load_cif(tmp_path):
    path = tmp_path / "TiO2.cif"
    ase.io.write(path, _by_name(builtin_bulks())["TiO2-rutile"].atoms)
    (entry,) = load_bulks(path)
    assert entry.name == "TiO2" and entry.source == str(path)
    assert entry.atoms.get_chemical_formula() == "O4Ti2"
    assert entry.atoms.get_volume() == pytest.approx(4.594**2 * 2.959, rel=1e-4)


def test_load_directory_of_mixed_files(tmp_path):
    ase.io.write(tmp_path / "b_cu.cif", bulk("Cu", "fcc", a=3.61, cubic=True))
    ase.io.write(tmp_path / "a_POSCAR.vasp", bulk("Fe", "bcc", a=2.87, cubic=True), format="vasp")
    ase.io.write(tmp_path / "c_two.extxyz", [bulk("Pt"), bulk("Au")])
    ase.io.write(tmp_path / "d_ru.traj", bulk("Ru"))
    ase.io.write(tmp_path / "b_cu.xyz", bulk("Ag"), format="extxyz")  # same stem as the cif
    with open(tmp_path / "e_db.pkl", "wb") as fh:
        pickle.dump([{"atoms": bulk("Pd"), "src_id": "mp-2"}], fh)
    (tmp_path / "README.txt").write_text("bulks for the Cu project\n")  # not a structure: skipped
    (tmp_path / ".hidden.cif").write_text("garbage")
    (tmp_path / "sub").mkdir()

    entries = load_bulks(tmp_path)
    assert [e.name for e in entries] == ["a_POSCAR", "b_cu", "b_cu_2", "c_two:0", "c_two:1", "d_ru", "mp-2"]
    formulas = [e.atoms.get_chemical_formula() for e in entries]
    assert formulas == ["Fe2", "Cu4", "Ag", "Pt", "Au", "Ru2", "Pd"]
    assert all(e.atoms.pbc.all() for e in entries)


def test_unsafe_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pkl"
    with open(path, "wb") as fh:
        pickle.dump([{"atoms": Exploit(), "src_id": "mp-1"}], fh)
    with pytest.raises(BulkFileError, match="evil.pkl") as info:
        load_bulks(path)
    assert "system" in str(info.value) and "\n" not in str(info.value)
    # also inside a directory scan: an unsafe file is an error there, never skipped
    with pytest.raises(BulkFileError, match="evil.pkl"):
        load_bulks(tmp_path)
    assert not marker.exists()


def test_getattr_gadget_is_refused(tmp_path):
    # Calculator pickles need builtins.getattr; only ASE's one spin-polarized shim may come through it.
    class Gadget:
        def __reduce__(self):
            return (getattr, (Atoms("Cu"), "__class__"))

    path = tmp_path / "gadget.pkl"
    with open(path, "wb") as fh:
        pickle.dump([{"atoms": Gadget(), "src_id": "mp-1"}], fh)
    with pytest.raises(BulkFileError, match="gadget.pkl.*getattr"):
        load_bulks(path)


def test_non_periodic_structure_is_refused(tmp_path):
    path = tmp_path / "water.xyz"
    ase.io.write(path, molecule("H2O"))
    with pytest.raises(BulkFileError, match="water.xyz.*'water'.*periodic"):
        load_bulks(path)

    slab_like = bulk("Cu", cubic=True)
    slab_like.pbc = (True, True, False)
    path = tmp_path / "bulks.pkl"
    with open(path, "wb") as fh:
        pickle.dump([{"atoms": bulk("Ni"), "src_id": "ok"}, {"atoms": slab_like, "src_id": "mp-slab"}], fh)
    with pytest.raises(BulkFileError, match="mp-slab"):
        load_bulks(path)


@pytest.mark.parametrize(
    "content, why",
    [
        (b"", "Empty"),
        (b"this is not a structure\n", "cannot read"),
    ],
)
def test_unreadable_files(tmp_path, content, why):
    path = tmp_path / "broken.cif"
    path.write_bytes(content)
    with pytest.raises(BulkFileError, match="broken.cif") as info:
        load_bulks(path)
    assert why in str(info.value) and "\n" not in str(info.value)


def test_bad_pickles_and_empty_inputs(tmp_path):
    for name, payload, why in [
        ("empty.pkl", [], "no structures"),
        ("dict.pkl", {"atoms": bulk("Cu")}, "list of bulk entries"),
        ("nums.pkl", [{"atoms": [1, 2, 3]}], "entry 0"),
    ]:
        path = tmp_path / name
        with open(path, "wb") as fh:
            pickle.dump(payload, fh)
        with pytest.raises(BulkFileError, match=why):
            load_bulks(path)
    truncated = tmp_path / "cut.pkl"
    truncated.write_bytes(pickle.dumps([{"atoms": bulk("Cu"), "src_id": "mp-30"}])[:40])
    with pytest.raises(BulkFileError, match="cut.pkl.*cannot unpickle"):
        load_bulks(truncated)
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    (empty_dir / "notes.txt").write_text("hello\n")
    with pytest.raises(BulkFileError, match="nothing.*no readable"):
        load_bulks(empty_dir)


def test_missing_path(tmp_path):
    missing = tmp_path / "no_such_bulks.pkl"
    with pytest.raises(BulkFileError, match="no_such_bulks.pkl"):
        load_bulks(missing)
    assert issubclass(BulkFileError, ValueError)


# ---------------------------------------------------------------------------------------------- fairchem slabs


@pytest.mark.slow
def test_fairchem_cuts_slabs_from_library_bulks(library):
    from fairchem.data.oc.core import Bulk

    by_name = _by_name(library)
    for name in ("Cu-fcc", "TiO2-rutile"):
        entry = by_name[name]
        slabs = Bulk(bulk_atoms=entry.atoms).get_slabs(max_miller=1)
        assert slabs, name
        millers = {s.millers for s in slabs}
        assert (1, 1, 1) in millers or (1, 1, 0) in millers
        for slab in slabs:
            assert set(slab.atoms.get_chemical_symbols()) == set(entry.elements)
            assert slab.atoms.pbc[:2].all()
