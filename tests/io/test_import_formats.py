"""`augkd import` of every other format, from real files the tests write: ASE .db and .traj, a folder of fairchem
.aselmdb files, OC20 S2EF pairs (xz), VASP OUTCAR and vasprun.xml in VASP's own layout, and a real GPAW relaxation
(text log and trajectory). Rows equal what ASE reads from the files."""

import lzma
import subprocess
import textwrap

import ase.db
import ase.io
import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

from augkd.cli import main
from augkd.hashing import sha256_file
from augkd.io.dataset import load_manifest
from test_import import assert_row_equals_source, import_args, relaxation, rows_by_position, with_nitrogen


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
    assert main(import_args([folder], out, "--shards", "2")) == 0
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
    assert main(import_args([folder], out, "--format", "aselmdb")) == 0
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
def write_s2ef(folder, rng, sizes=(5, 4)):
    """OC20 S2EF pairs N.extxyz.xz + N.txt.xz: one structure per system, system id and frame from N.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for number, size in enumerate(sizes):
        frames, lines = [], []
        for i in range(size):
            atoms = relaxation(rng, 1, adsorbate_shift=0.1 * i, stress=False)[0]
            energy = atoms.calc.results["energy"]
            atoms.calc = SinglePointCalculator(atoms, energy=energy, free_energy=energy,
                                               forces=atoms.calc.results["forces"])
            frames.append(atoms)
            sid, fid, reference = f"random{1331004 + 10 * number + i}", 7 * i + 1, float(rng.normal() - 40)
            lines.append(f"{sid},frame{fid},{reference}\n")
            truth[(f"{number}.extxyz.xz", i)] = (sid, fid, reference)
        with lzma.open(folder / f"{number}.extxyz.xz", "wt") as handle:
            ase.io.write(handle, frames, format="extxyz")
        with lzma.open(folder / f"{number}.txt.xz", "wt") as handle:
            handle.writelines(lines)
    return truth


@pytest.fixture(scope="module")
def s2ef(tmp_path_factory):
    folder = tmp_path_factory.mktemp("s2ef") / "s2ef_train"
    return folder, write_s2ef(folder, np.random.default_rng(3))


def test_oc20_s2ef_pairs_take_ids_from_the_txt_and_total_energies(s2ef, tmp_path):
    folder, truth = s2ef
    header = lzma.open(folder / "0.extxyz.xz", "rt").read().splitlines()[1]
    assert "Properties=species:S:1:pos:R:3:move_mask:L:1:tags:I:1:forces:R:3" in header  # OC20's own columns
    out = tmp_path / "total"
    assert main(import_args([folder], out, "--energy", "total")) == 0
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
    assert main(import_args([folder], total)) == 0
    assert main(import_args([folder / "0.extxyz.xz", folder / "1.extxyz.xz"], adsorption, "--energy", "adsorption",
                            "--format", "oc20-s2ef", "--shards", "3")) == 0
    totals, adsorbed = rows_by_position(total), rows_by_position(adsorption)
    assert sorted(totals) == sorted(adsorbed)
    for key, row in adsorbed.items():
        assert row.energy == pytest.approx(totals[key].energy - truth[key][2], abs=1e-12)
        np.testing.assert_array_equal(row.forces, totals[key].forces)
    assert load_manifest(adsorption)["energy"] == "adsorption"


def test_oc20_txt_that_does_not_match_its_frames_is_refused(tmp_path, capsys):
    folder = tmp_path / "s2ef"
    write_s2ef(folder, np.random.default_rng(4), sizes=(3,))
    with lzma.open(folder / "0.txt.xz", "rt") as handle:
        lines = handle.readlines()
    with lzma.open(folder / "0.txt.xz", "wt") as handle:
        handle.writelines(lines[:2])
    assert main(import_args([folder], tmp_path / "out")) == 2
    assert "0.txt.xz: 2 lines for the 3 frames" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- VASP -------------------------------------------------------------------------------------------------------------
def vasp_relaxation(steps=3):
    """A 5-atom Cu4O cell relaxed by EMT for a few steps: (atoms, [(positions, forces, energy, stress)])."""
    from ase.build import fcc111
    from ase.optimize import BFGS

    atoms = fcc111("Cu", size=(2, 2, 1), vacuum=5.0, a=3.6)
    atoms.append("O")
    atoms.positions[-1] = atoms.positions[0] + [1.3, 0.7, 1.6]
    atoms.set_constraint(FixAtoms(indices=[0, 1]))
    atoms.calc = EMT()
    recorded = []

    def record():
        stress = np.array([3.1, -2.2, 1.4, 0.3, -0.2, 0.1]) * (1 + len(recorded))  # kB, VASP's XX YY ZZ XY YZ ZX
        recorded.append((atoms.positions.copy(), atoms.get_forces(apply_constraint=False).copy(),
                         atoms.get_potential_energy() - 17.0, stress))

    optimizer = BFGS(atoms, logfile=None)
    optimizer.attach(record)
    optimizer.run(fmax=1e-4, steps=steps - 1)
    assert len(recorded) == steps
    return atoms, recorded


def write_outcar(path, atoms, steps):
    """An OUTCAR as VASP 6 writes one, cut to the blocks a reader needs: header, then per ionic step the SCF
    iterations, the stress, the cell, positions and total forces, and the free energy."""
    symbols = ["Cu", "O"]
    counts = [atoms.get_chemical_symbols().count(s) for s in symbols]
    cell = atoms.cell.array
    reciprocal = atoms.cell.reciprocal()
    lattice = "\n".join(f"   {a[0]:12.9f}{a[1]:13.9f}{a[2]:13.9f}    {b[0]:13.9f}{b[1]:13.9f}{b[2]:13.9f}"
                        for a, b in zip(cell, reciprocal))
    out = [
        " vasp.6.3.2 27Jun22 (build Jul 19 2022 12:00:00) complex",
        "  ",
        " executed on             LinuxIFC date 2026.11.30  10:00:00",
        " running on    4 total cores",
        " distrk:  each k-point on    4 cores,    1 groups",
        " distr:  one band on NCORE=   1 cores,    4 groups",
        "", "",
        "--------------------------------------------------------------------------------------------------------",
        "", "",
        " INCAR:",
        " POTCAR:    PAW_PBE Cu 22Jun2005",
        " POTCAR:    PAW_PBE O 08Apr2002",
        "",
        " POTCAR:    PAW_PBE Cu 22Jun2005",
        "   VRHFIN =Cu: d10 p1",
        " POTCAR:    PAW_PBE O 08Apr2002",
        "   VRHFIN =O: s2p4",
        "",
        " Dimension of arrays:",
        "   k-points           NKPTS =      1   k-points in BZ     NKDIM =      1   number of bands    NBANDS=     48",
        f"   number of dos      NEDOS =    301   number of ions     NIONS = {len(atoms):6d}",
        "   ions per type =          " + "".join(f"{n:4d}" for n in counts),
        "",
        " SYSTEM =  Cu4O slab",
        " POSCAR =  Cu4 O1",
        "",
        " Startparameter for this run:",
        "   NWRITE =      2    write-flag & timer",
        "   ISTART =      0    job   : 0-new  1-cont  2-samecut",
        "   ISPIN  =      1    spin polarized calculation?",
        " Electronic Relaxation 1",
        "   ENCUT  =  400.0 eV  29.40 Ry    5.42 a.u.",
        " Ionic relaxation",
        f"   NSW    = {len(steps):6d}    number of steps for IOM",
        "   IBRION =      2    ionic relax: 0-MD 1-quasi-New 2-CG",
        "",
        "  energy-cutoff  :      400.00",
        f"  volume of cell : {atoms.get_volume():11.2f}",
        "      direct lattice vectors                 reciprocal lattice vectors",
        lattice,
        "",
        " k-points in reciprocal lattice and weights: Gamma",
        "   0.00000000  0.00000000  0.00000000       1.000",
        "",
    ]
    for step, (positions, forces, energy, stress) in enumerate(steps, start=1):
        for scf in (1, 2):
            out += [
                f"----------------------------------------- Iteration {step:6d}({scf:4d})  "
                "---------------------------------------",
                "",
                "  free energy    TOTEN  = " + f"{energy + 0.1 / scf:20.8f} eV",
                "",
            ]
        out += [
            " E-fermi :  -3.7404     XC(G=0):  -1.0024     alpha+bet : -0.5589",
            "",
            "  FORCE on cell =-STRESS in cart. coord.  units (eV):",
            "  Direction    XX          YY          ZZ          XY          YZ          ZX",
            "  --------------------------------------------------------------------------------------",
            "  Total   " + "".join(f"{s * 0.3:12.5f}" for s in stress),
            "  in kB   " + "".join(f"{s:12.5f}" for s in stress),
            "  external pressure =        0.77 kB  Pullay stress =        0.00 kB",
            "",
            " VOLUME and BASIS-vectors are now :",
            " -----------------------------------------------------------------------------",
            "  energy-cutoff  :      400.00",
            f"  volume of cell : {atoms.get_volume():11.2f}",
            "      direct lattice vectors                 reciprocal lattice vectors",
            lattice,
            "",
            " POSITION                                       TOTAL-FORCE (eV/Angst)",
            " -----------------------------------------------------------------------------------",
            *(f" {p[0]:12.5f}{p[1]:13.5f}{p[2]:13.5f}{f[0]:18.6f}{f[1]:14.6f}{f[2]:14.6f}"
              for p, f in zip(positions, forces)),
            " -----------------------------------------------------------------------------------",
            "    total drift:                                0.000001      0.000002     -0.000001",
            "",
            "--------------------------------------------------------------------------------------------------------",
            "", "",
            "  FREE ENERGIE OF THE ION-ELECTRON SYSTEM (eV)",
            "  ---------------------------------------------------",
            f"  free  energy   TOTEN  = {energy + 0.002:20.8f} eV",
            "",
            f"  energy  without entropy= {energy + 0.003:17.8f}  energy(sigma->0) = {energy:17.8f}",
            "",
            "--------------------------------------------------------------------------------------------------------",
            "",
        ]
    out += ["", " General timing and accounting informations for this job:",
            " ========================================================", "",
            "                  Total CPU time used (sec):       12.345", ""]
    path.write_text("\n".join(out) + "\n")


def write_vasprun(path, atoms, steps):
    """A vasprun.xml as VASP writes it (generator, incar, atominfo, initial structure with selective dynamics, one
    calculation per ionic step with SCF energies, structure, forces and stress), complete with </modeling>."""
    cell = atoms.cell.array
    fixed = {index for constraint in atoms.constraints for index in constraint.get_indices()}

    def basis():
        return "\n".join(f"    <v> {a[0]:16.8f} {a[1]:16.8f} {a[2]:16.8f} </v>" for a in cell)

    def structure(positions, name=""):
        scaled = np.linalg.solve(cell.T, np.asarray(positions).T).T
        selective = ""
        if name == ' name="initialpos" ':
            selective = ('\n  <varray type="logical" name="selective" >\n' + "\n".join(
                f"   <v type=\"logical\" > {' F  F  F' if i in fixed else ' T  T  T'} </v>" for i in range(len(atoms)))
                + "\n  </varray>")
        return (f" <structure{name}>\n  <crystal>\n   <varray name=\"basis\" >\n{basis()}\n   </varray>\n"
                f"   <i name=\"volume\">  {atoms.get_volume():14.8f} </i>\n  </crystal>\n"
                "  <varray name=\"positions\" >\n" + "\n".join(f"   <v> {s[0]:18.8f} {s[1]:18.8f} {s[2]:18.8f} </v>"
                                                           for s in scaled)
                + f"\n  </varray>{selective}\n </structure>")

    symbols = atoms.get_chemical_symbols()
    xml = [
        '<?xml version="1.0" encoding="ISO-8859-1"?>',
        "<modeling>",
        ' <generator>\n  <i name="program" type="string">vasp </i>\n  <i name="version" type="string">6.3.2  </i>\n'
        " </generator>",
        ' <incar>\n  <i type="string" name="PREC">accurate</i>\n  <i name="ENCUT">    400.00000000</i>\n'
        '  <i type="int" name="IBRION">     2</i>\n  <i type="int" name="NSW">     3</i>\n </incar>',
        " <atominfo>",
        f"  <atoms>      {len(atoms)} </atoms>",
        "  <types>       2 </types>",
        '  <array name="atoms" >\n   <dimension dim="1">ion</dimension>\n   <field type="string">element</field>\n'
        '   <field type="int">atomtype</field>\n   <set>\n' + "\n".join(
            f"    <rc><c>{s:2s}</c><c>   {1 if s == 'Cu' else 2}</c></rc>" for s in symbols) + "\n   </set>\n  </array>",
        " </atominfo>",
        ' <kpoints>\n  <generation param="Gamma">\n   <v type="int" name="divisions">       1        1        1 </v>\n'
        '  </generation>\n  <varray name="kpointlist" >\n   <v>       0.00000000       0.00000000       0.00000000 </v>\n'
        '  </varray>\n  <varray name="weights" >\n   <v>       1.00000000 </v>\n  </varray>\n </kpoints>',
        structure(steps[0][0], ' name="initialpos" '),
    ]
    for positions, forces, energy, stress in steps:
        def energies(e0):
            return (f'    <i name="e_fr_energy"> {e0 + 0.002:16.8f} </i>\n'
                    f'    <i name="e_wo_entrp"> {e0 + 0.003:16.8f} </i>\n'
                    f'    <i name="e_0_energy"> {e0:16.8f} </i>')
        xml += [
            " <calculation>",
            f"  <scstep>\n   <energy>\n{energies(energy + 0.5)}\n   </energy>\n  </scstep>",
            f"  <scstep>\n   <energy>\n{energies(energy)}\n   </energy>\n  </scstep>",
            structure(positions),
            '  <varray name="forces" >\n' + "\n".join(f"   <v> {f[0]:16.8f} {f[1]:16.8f} {f[2]:16.8f} </v>"
                                                     for f in forces) + "\n  </varray>",
            '  <varray name="stress" >\n' + "\n".join(
                f"   <v> {row[0]:16.8f} {row[1]:16.8f} {row[2]:16.8f} </v>"
                for row in np.array([[stress[0], stress[3], stress[5]], [stress[3], stress[1], stress[4]],
                                     [stress[5], stress[4], stress[2]]])) + "\n  </varray>",
            f"  <energy>\n{energies(energy)}\n  </energy>",
            " </calculation>",
        ]
    xml += [structure(steps[-1][0], ' name="finalpos" '), "</modeling>"]
    path.write_text("\n".join(xml) + "\n")


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
    assert main(import_args([folder], out)) == 0  # POSCAR is not labelled data: ignored in a folder
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


def test_truncated_vasprun_is_refused(vasp_run, tmp_path, capsys):
    folder, _ = vasp_run
    cut = tmp_path / "vasprun.xml"
    text = (folder / "vasprun.xml").read_text()
    cut.write_text(text[: text.rindex("<calculation>")])
    assert main(import_args([cut], tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "vasprun.xml: truncated" in err and not (tmp_path / "out").exists()


def test_a_format_without_labels_is_refused_naming_the_file(vasp_run, tmp_path, capsys):
    folder, _ = vasp_run
    assert main(import_args([folder / "POSCAR"], tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("augkd: error: POSCAR: no frame carries energy and forces") and "\n" not in err
    assert not (tmp_path / "out").exists()


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
    assert main(import_args([gpaw_run / "h2.txt", gpaw_run / "h2.traj"], out)) == 0
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
