"""Labelled DFT-like frames and the files DFT codes write (extxyz, OC20 S2EF pairs, VASP OUTCAR and vasprun.xml),
shared by the import tests (tests/io) and the `augkd import` / `augkd split` command-line tests (tests/cli)."""

import lzma

import ase.io
import numpy as np
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

from conftest import cu_adslab


def relaxation(rng, steps, adsorbate_shift=0.0, stress=True):
    """Frames of one OC20-style Cu(111)+O 'relaxation': FixAtoms on tag 0, tags 0/1/2, energy, forces, stress."""
    start = cu_adslab(rng)
    start.positions[-1, 0] += adsorbate_shift
    start.info.clear()  # ase.build's adsorbate_info: not a frame property
    frames = []
    for step in range(steps):
        atoms = start.copy()
        atoms.positions += rng.normal(scale=0.01 * (steps - step), size=atoms.positions.shape)
        labels = {"energy": float(-50 + rng.normal()), "forces": rng.normal(size=(len(atoms), 3))}
        if stress:
            labels["stress"] = rng.normal(scale=0.01, size=6)
        atoms.calc = SinglePointCalculator(atoms, **labels)
        frames.append(atoms)
    return frames


def with_nitrogen(frames):
    """The same frames with the adsorbate made N: another composition, so another run."""
    for atoms in frames:
        results = atoms.calc.results
        atoms.numbers[-1] = 7
        atoms.calc = SinglePointCalculator(atoms, **results)
    return frames


def source_frames(seed=0, stress=True):
    rng = np.random.default_rng(seed)
    return relaxation(rng, 4, stress=stress) + with_nitrogen(relaxation(rng, 3, 0.5, stress)) + relaxation(rng, 2)


def import_args(sources, out, *extra):
    return ["import", *map(str, sources), "--out", str(out), "--quiet", *extra]


def import_files(sources, out, **options):
    """``augkd import SOURCES --out OUT --quiet`` without the command line: ``options`` are ``ImportConfig``'s
    fields (origin, format, index, shards, energy, strict) and ``resume``. Returns the manifest."""
    from augkd.io.importers import ImportConfig, import_dataset

    resume = options.pop("resume", False)
    manifest, _ = import_dataset(ImportConfig(sources=tuple(map(str, sources)), **options), out, progress=False,
                                 resume=resume)
    return manifest


def write_with_gaps(path):
    """Frames 1 and 3 have no labels at all, frame 4 no forces, frame 5 a NaN force, frame 6 no tags/FixAtoms."""
    frames = source_frames(stress=False)[:7]
    frames[1].calc = None
    frames[3].calc = None
    frames[4].calc = SinglePointCalculator(frames[4], energy=-3.0)
    forces = frames[5].calc.results["forces"].copy()
    forces[2, 1] = np.nan
    frames[5].calc = SinglePointCalculator(frames[5], energy=-2.0, forces=forces)
    frames[6].set_constraint()
    frames[6].set_tags(0)
    ase.io.write(path, frames, format="extxyz")
    return frames


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


def twelve_systems(folder):
    """``folder/dft``: an imported dataset of 12 systems of 1-4 frames each (every other one with N), in three
    shards; what the split tests split."""
    rng = np.random.default_rng(9)
    frames = []
    for system in range(12):
        steps = relaxation(rng, 1 + system % 4)
        for atoms in steps:
            atoms.info["sid"] = f"system-{system:02d}"
        frames += steps if system % 2 else with_nitrogen(steps)
    ase.io.write(folder / "dft.extxyz", frames, format="extxyz")
    out = folder / "dft"
    import_files([folder / "dft.extxyz"], out, shards=3)
    return out
