"""`augkd import` of every other format, from real files the tests write: ASE .db and .traj, a folder of fairchem
.aselmdb files, OC20 S2EF pairs (xz), VASP OUTCAR and vasprun.xml in VASP's own layout, and a real GPAW relaxation
(text log and trajectory). Rows equal what ASE reads from the files (files a reader refuses:
tests/cli/test_import_cli.py)."""

import lzma
import subprocess
import textwrap

import ase.db
import ase.io
import numpy as np
import pytest

from augkd.hashing import sha256_file
from augkd.io.dataset import load_manifest
from dft_files import (
    import_files, relaxation, vasp_relaxation, with_nitrogen, write_outcar, write_s2ef, write_vasprun,
)
from test_import import assert_row_equals_source, rows_by_position


def test_ase_db_and_traj_in_a_folder(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "runs"
    folder.mkdir()
    trajectory = relaxation(rng, 4)
    ase.io.write(folder / "relax.traj", trajectory)
    database = ase.db.connect(folder / "structures.db")
    stored = relaxation(rng, 2) + with_nitrogen(relaxation(rng, 1))
    for number, atoms in enumerate(stored):
        database.write(atoms, **({"sid": "mine-7", "fid": 3} if number == 2 else {}))
    out = tmp_path / "out"
    import_files([folder], out, shards=2)
    rows = rows_by_position(out)
    assert sorted(rows) == [("relax.traj", i) for i in range(4)] + [("structures.db", i) for i in range(3)]
    for name in ("relax.traj", "structures.db"):
        for frame, atoms in enumerate(ase.io.read(folder / name, index=":")):
            assert_row_equals_source(rows[(name, frame)], atoms)
    assert [(rows[("relax.traj", i)].data["sid"], rows[("relax.traj", i)].data["fid"]) for i in range(4)] == [
        ("relax.traj#0", i) for i in range(4)]
    assert [(rows[("structures.db", i)].data["sid"], rows[("structures.db", i)].data["fid"]) for i in range(3)] == [
        ("structures.db#0", 0), ("structures.db#0", 1), ("mine-7", 3)]  # key-value pairs win
    manifest = load_manifest(out)
    assert {s["path"]: (s["format"], s["frames"]) for s in manifest["sources"]} == {
        "relax.traj": ("traj", 4), "structures.db": ("db", 3)}


def test_folder_of_fairchem_aselmdb_files(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "oc20-aselmdb"
    folder.mkdir()
    expected = {}
    for part in range(2):
        path = folder / f"data.{part:04d}.aselmdb"
        database = ase.db.connect(path)  # fairchem's own backend (ase_db_backends), as fairchem writes them
        for fid, atoms in enumerate(relaxation(rng, 3)):
            database.write(atoms, data={"sid": 1000 + part, "fid": fid, "ref_energy": -1.5})
        database.close()
        expected[path.name] = ase.db.connect(path, readonly=True, use_lock_file=False)
    listing = sorted(p.name for p in folder.iterdir())
    out = tmp_path / "out"
    import_files([folder], out, format="aselmdb")
    rows = rows_by_position(out)
    assert sorted(rows) == [(f"data.{p:04d}.aselmdb", i) for p in range(2) for i in range(3)]
    for name, database in expected.items():
        for frame, row in enumerate(database.select()):
            imported = rows[(name, frame)]
            assert_row_equals_source(imported, row.toatoms())
            assert (imported.data["sid"], imported.data["fid"]) == (str(row.data["sid"]), row.data["fid"])
    assert all(s["format"] == "aselmdb" for s in load_manifest(out)["sources"])
    assert sorted(p.name for p in folder.iterdir()) == listing  # read only: no lock file, nothing written


# -- OC20 S2EF ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s2ef(tmp_path_factory):
    folder = tmp_path_factory.mktemp("s2ef") / "s2ef_train"
    return folder, write_s2ef(folder, np.random.default_rng(3))


def test_oc20_s2ef_pairs_take_ids_from_the_txt_and_total_energies(s2ef, tmp_path):
    folder, truth = s2ef
    header = lzma.open(folder / "0.extxyz.xz", "rt").read().splitlines()[1]
    assert "Properties=species:S:1:pos:R:3:move_mask:L:1:tags:I:1:forces:R:3" in header  # OC20's own columns
    out = tmp_path / "total"
    import_files([folder], out, energy="total")
    rows = rows_by_position(out)
    assert sorted(rows) == sorted(truth)
    for (name, frame), row in rows.items():
        source = ase.io.read(folder / name, index=frame)
        assert_row_equals_source(row, source)
        sid, fid, reference = truth[(name, frame)]
        assert (row.data["sid"], row.data["fid"], row.data["reference_energy"]) == (sid, fid, reference)
    manifest = load_manifest(out)
    assert manifest["energy"] == "total"
    assert [(s["path"], s["format"], s["companion"]) for s in manifest["sources"]] == [
        ("0.extxyz.xz", "oc20-s2ef", "0.txt.xz"), ("1.extxyz.xz", "oc20-s2ef", "1.txt.xz")]
    assert manifest["sources"][0]["companion_sha256"] == sha256_file(folder / "0.txt.xz")


def test_oc20_s2ef_adsorption_energies_subtract_the_reference(s2ef, tmp_path):
    folder, truth = s2ef
    total, adsorption = tmp_path / "total", tmp_path / "adsorption"
    import_files([folder], total)
    import_files([folder / "0.extxyz.xz", folder / "1.extxyz.xz"], adsorption, energy="adsorption",
                 format="oc20-s2ef", shards=3)
    totals, adsorbed = rows_by_position(total), rows_by_position(adsorption)
    assert sorted(totals) == sorted(adsorbed)
    for key, row in adsorbed.items():
        assert row.energy == pytest.approx(totals[key].energy - truth[key][2], abs=1e-12)
        np.testing.assert_array_equal(row.forces, totals[key].forces)
    assert load_manifest(adsorption)["energy"] == "adsorption"


# -- VASP -------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vasp_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vasp") / "Cu4O"
    folder.mkdir()
    atoms, steps = vasp_relaxation(3)
    ase.io.write(folder / "POSCAR", atoms, format="vasp", direct=True)  # selective dynamics: ASE reads FixAtoms
    write_outcar(folder / "OUTCAR", atoms, steps)
    write_vasprun(folder / "vasprun.xml", atoms, steps)
    return folder, steps


def test_vasp_outcar_and_vasprun_every_ionic_step_is_a_row(vasp_run, tmp_path):
    folder, steps = vasp_run
    out = tmp_path / "out"
    import_files([folder], out)  # POSCAR is not labelled data: ignored in a folder
    rows = rows_by_position(out)
    assert sorted(rows) == [("OUTCAR", i) for i in range(3)] + [("vasprun.xml", i) for i in range(3)]
    for name in ("OUTCAR", "vasprun.xml"):
        source = ase.io.read(folder / name, index=":")
        assert len(source) == 3
        for step, (positions, forces, energy, _) in enumerate(steps):
            row = rows[(name, step)]
            assert_row_equals_source(row, source[step])
            assert (row.data["sid"], row.data["fid"]) == (f"{name}#0", step)  # fid: the ionic step
            assert row.energy == pytest.approx(energy, abs=1e-8)  # energy(sigma->0), as VASP printed it
            np.testing.assert_allclose(row.forces, forces, atol=1e-6)
            np.testing.assert_allclose(row.atoms.positions, positions, atol=1e-5)
            np.testing.assert_array_equal(row.fixed, [True, True, False, False, False])
        assert "stress" in rows[(name, 0)].data
    assert load_manifest(out)["files_ignored"] == ["POSCAR"]
    stress_outcar = rows[("OUTCAR", 2)].data["stress"]
    np.testing.assert_allclose(stress_outcar, rows[("vasprun.xml", 2)].data["stress"], atol=1e-9)


# -- GPAW -------------------------------------------------------------------------------------------------------------
GPAW_RELAXATION = textwrap.dedent("""
    from ase import Atoms
    from ase.optimize import BFGS
    from gpaw import GPAW, PW
    atoms = Atoms("H2", positions=[(0, 0, 0), (0, 0, 0.86)], cell=(3.5, 3.5, 4.0), pbc=True)
    atoms.center()
    atoms.calc = GPAW(mode=PW(200), xc="LDA", kpts=(1, 1, 1), symmetry="off", txt="h2.txt")
    BFGS(atoms, trajectory="h2.traj", logfile=None).run(fmax=0.01, steps=3)
""")


def _gpaw_missing() -> str | None:
    try:
        result = subprocess.run(["/usr/bin/python3", "-c", "import gpaw"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"/usr/bin/python3 is not usable ({exc})"
    if result.returncode:
        return "/usr/bin/python3 cannot import gpaw (Debian: apt-get install -y gpaw)"
    return None


@pytest.fixture(scope="module")
def gpaw_run(tmp_path_factory):
    reason = _gpaw_missing()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("gpaw")
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(folder)}
    subprocess.run(["/usr/bin/python3", "-c", GPAW_RELAXATION], cwd=folder, env=env, check=True,
                   capture_output=True, timeout=300)
    return folder


def test_gpaw_relaxation_from_its_text_log_and_trajectory(gpaw_run, tmp_path):
    out = tmp_path / "out"
    import_files([gpaw_run / "h2.txt", gpaw_run / "h2.traj"], out)
    rows = rows_by_position(out)
    log, trajectory = ase.io.read(gpaw_run / "h2.txt", index=":"), ase.io.read(gpaw_run / "h2.traj", index=":")
    assert 2 <= len(log) == len(trajectory)
    assert sorted(rows) == sorted([("h2.txt", i) for i in range(len(log))] + [("h2.traj", i) for i in range(len(log))])
    for name, frames in (("h2.txt", log), ("h2.traj", trajectory)):
        for step, atoms in enumerate(frames):
            row = rows[(name, step)]
            assert_row_equals_source(row, atoms)
            assert (row.data["sid"], row.data["fid"]) == (f"{name}#0", step)
    for step in range(len(log)):  # the log prints what the trajectory stores, rounded
        assert rows[("h2.txt", step)].energy == pytest.approx(rows[("h2.traj", step)].energy, abs=1e-5)
        np.testing.assert_allclose(rows[("h2.txt", step)].forces, rows[("h2.traj", step)].forces, atol=1e-4)
    assert {s["format"] for s in load_manifest(out)["sources"]} == {"gpaw-out", "traj"}
