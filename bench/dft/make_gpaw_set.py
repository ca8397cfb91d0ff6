#!/usr/bin/env python3
"""A small real-DFT reference set: GPAW single points of adsorbates on fcc metal slabs (issue 17, item 1).

Runs under the system interpreter with Debian's ``gpaw`` (22.8) and ``python3-ase`` (3.22); it does not import augkd::

    nice -n 19 env OMP_NUM_THREADS=1 /usr/bin/python3 bench/dft/make_gpaw_set.py --out bench/data/gpaw_dft

What it makes
-------------
* Systems: one adsorbate (H, O, N, C, OH, CO, NH) on a small slab of Cu, Pt, Pd, Ag, Au or Ni, facets fcc(111) and
  fcc(100) (2x2 surface cell, 3 layers, 12 metal atoms) and fcc(211) (ase.build.fcc211 size (3, 2, 2), 12 metal
  atoms, a step edge). Every metal x facet pair gets 3 different adsorbates (a seeded rotation through the 7, so
  each adsorbate appears 7-8 times) on a seeded choice of site: 54 systems.
* OC20 tags: 0 = subsurface (fixed with FixAtoms), 1 = surface (the top layer of 111/100; the top three atomic
  rows, within 1.7 A of the highest metal atom, of 211), 2 = adsorbate.
* Geometry: the adsorbate is placed with ase.build.add_adsorbate, then the free atoms are pre-relaxed with ASE's EMT
  (BFGS, fmax 0.05 eV/A, <= 200 steps; the adsorbate's internal bond held at its gas-phase length with
  FixBondLengths, since EMT's H/C/N/O parameters are crude). If EMT pushes the adsorbate into or off the surface the
  unrelaxed placement is kept (info ``prerelax`` says which). A lone H stays where it was placed (EMT binds H ~0.5 A
  too far out); only the surface relaxes under it.
* Frames per system (``fid``): 0 = the near-relaxed geometry, 1 and 2 = copies whose free atoms are rattled with a
  Gaussian of std 0.05 A and 0.10 A per coordinate (seeded per system and frame): 162 structures.
* Split by system (all frames of one ``sid`` on one side), seeded and stratified by metal: 2 of the 9 systems of
  every metal go to test (12 systems, 36 structures), the rest to train (42 systems, 126 structures).

DFT settings (one single point: ~30-55 s of CPU on one core of this 2-core AMD EPYC VM)
---------------------------------------------------------------------------------------
PBE; plane waves 300 eV; k-points 2x2x1 Monkhorst-Pack (time-reversal symmetry only, so rattled frames keep the
same k-points); Fermi-Dirac smearing 0.1 eV; spin-paired (Ni too); the 10/11-electron PAW setups for Pt, Pd, Ni
(10) and Ag (11) (Cu and Au default, 11); SCF convergence energy 5e-4 eV/electron, density 1e-5, eigenstates
1e-6 eV^2/electron, forces 0.005 eV/A (with GPAW's default density 1e-4 a rattled frame's forces depended on the
starting density by up to 0.06 eV/A; with 1e-5, by < 0.003 eV/A); vacuum 6 A on each side of the slab; lattice
constants close to PBE's (Cu 3.63, Ni 3.52, Pd 3.94, Ag 4.15, Pt 3.97, Au 4.16 A). The frames of one system run
in one GPAW calculator, so the rattled frames start from the converged density of the previous one. 300 eV is
below what converged adsorption energies need (the spec asks >= 450-500 eV for production labels); it is a
consistent, cheap reference for comparing ML models.

Labels: ``energy`` is the Mermin free energy (force-consistent, ``get_potential_energy(force_consistent=True)``:
the forces are its negative gradient); info ``energy_sigma0`` holds GPAW's extrapolation to zero smearing.

Resuming
--------
Each finished structure is written at once to ``OUT/progress/<sid>__<fid>.extxyz`` (temporary file, then rename),
so a killed run restarts where it stopped: rerun the same command. Systems whose SCF failed are listed in
``OUT/progress/failed.jsonl`` and skipped on resume (``--retry-failed`` tries them again). At the end (and with
``--assemble-only``) ``OUT/train.extxyz``, ``OUT/test.extxyz`` and ``OUT/settings.json`` are (re)written from every
finished structure. ``--limit N`` computes at most N new structures (a smoke run) and then assembles.
GPAW's own text logs go to ``--gpaw-txt DIR`` (default: none).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.build import add_adsorbate, fcc100, fcc111, fcc211  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402
from ase.constraints import FixAtoms, FixBondLengths  # noqa: E402
from ase.io import read, write  # noqa: E402
from ase.optimize import BFGS  # noqa: E402

SEED = 20240517
METALS = ("Cu", "Pt", "Pd", "Ag", "Au", "Ni")
FACETS = ("111", "100", "211")
ADSORBATES = ("H", "O", "N", "C", "OH", "CO", "NH")
ADSORBATES_PER_SLAB = 3
TEST_SYSTEMS_PER_METAL = 2
RATTLE_STDS = (0.05, 0.10)  # Å, per coordinate, frames 1 and 2

#: lattice constants close to PBE's (Å)
LATTICE = {"Cu": 3.63, "Ni": 3.52, "Pd": 3.94, "Ag": 4.15, "Pt": 3.97, "Au": 4.16}
VACUUM = 6.0  # Å on each side
SLAB_SIZE = {"111": (2, 2, 3), "100": (2, 2, 3), "211": (3, 2, 2)}
SITES = {"111": ("ontop", "bridge", "fcc", "hcp"), "100": ("ontop", "bridge", "hollow"),
         "211": ("step-ontop", "step-bridge")}
#: adsorbate height above the top metal layer (Å) by site kind, first the heavy atom then H
HEIGHTS = {"ontop": (1.85, 1.55), "bridge": (1.5, 1.15), "hollow": (1.2, 0.9)}
SITE_KIND = {"ontop": "ontop", "step-ontop": "ontop", "bridge": "bridge", "step-bridge": "bridge",
             "fcc": "hollow", "hcp": "hollow", "hollow": "hollow"}
#: binding atom first; the second atom straight above it at its gas-phase bond length (Å)
BONDS = {"OH": 0.97, "CO": 1.15, "NH": 1.04}

GPAW_SETTINGS = {
    "mode": "pw",
    "ecut_eV": 300.0,
    "xc": "PBE",
    "kpts": [2, 2, 1],
    "occupations": {"name": "fermi-dirac", "width_eV": 0.1},
    "spinpol": False,
    "setups": {"Pt": "10", "Pd": "10", "Ni": "10", "Ag": "11"},
    "convergence": {"energy": 5e-4, "density": 1e-5, "eigenstates": 1e-6, "forces": 0.005},
    "symmetry": {"point_group": False},
}
EMT_PRERELAX = {"optimizer": "BFGS", "fmax_eV_per_A": 0.05, "max_steps": 200}
INFO_KEYS_DROPPED_FROM_SPLITS = ("wall_s", "cpu_s", "scf_iterations")


# -- the plan ----------------------------------------------------------------------------------------------------
def plan_systems(seed: int = SEED) -> list[dict]:
    """Every system of the set, in computation order: metal x facet pairs, 3 adsorbates each, seeded sites and split."""
    rng = np.random.default_rng(seed)
    order = [ADSORBATES[i] for i in rng.permutation(len(ADSORBATES))]
    systems = []
    pairs = [(metal, facet) for metal in METALS for facet in FACETS]
    for index, (metal, facet) in enumerate(pairs):
        for j in range(ADSORBATES_PER_SLAB):
            adsorbate = order[(ADSORBATES_PER_SLAB * index + j) % len(order)]
            site = SITES[facet][int(rng.integers(len(SITES[facet])))]
            systems.append({"sid": f"{metal}-{facet}-{adsorbate}-{site}", "metal": metal, "facet": facet,
                            "adsorbate": adsorbate, "site": site})
    for metal in METALS:  # stratified split: TEST_SYSTEMS_PER_METAL systems of every metal go to test
        mine = [s for s in systems if s["metal"] == metal]
        test = set(int(i) for i in rng.choice(len(mine), size=TEST_SYSTEMS_PER_METAL, replace=False))
        for i, system in enumerate(mine):
            system["split"] = "test" if i in test else "train"
    for number, system in enumerate(systems):
        system["index"] = number
    assert len({s["sid"] for s in systems}) == len(systems), "sids must be unique"
    return systems


def frames_of(system: dict) -> list[dict]:
    return [{"fid": 0, "rattle_std": 0.0}] + [{"fid": k + 1, "rattle_std": std} for k, std in enumerate(RATTLE_STDS)]


# -- geometry ----------------------------------------------------------------------------------------------------
def adsorbate_atoms(name: str) -> Atoms:
    if name in BONDS:
        return Atoms(name, positions=[(0.0, 0.0, 0.0), (0.0, 0.0, BONDS[name])])
    return Atoms(name, positions=[(0.0, 0.0, 0.0)])


def build_slab(metal: str, facet: str) -> Atoms:
    """The clean slab with OC20 tags (0 subsurface, 1 surface) and FixAtoms on tag 0."""
    size, a = SLAB_SIZE[facet], LATTICE[metal]
    if facet == "111":
        slab = fcc111(metal, size=size, a=a, vacuum=VACUUM, orthogonal=False)
    elif facet == "100":
        slab = fcc100(metal, size=size, a=a, vacuum=VACUUM)
    else:
        slab = fcc211(metal, size=size, a=a, vacuum=VACUUM)
    z = slab.positions[:, 2]
    if facet == "211":
        surface = z >= z.max() - 1.7
    else:
        surface = np.asarray(slab.get_tags()) == 1  # ase.build numbers layers from the top
    slab.set_tags(np.where(surface, 1, 0))
    slab.set_constraint(FixAtoms(mask=~surface))
    slab.pbc = (True, True, True)  # periodic cell with vacuum along z (GPAW PW needs full periodicity)
    return slab


def site_position(slab: Atoms, site: str) -> str | tuple[float, float]:
    if not site.startswith("step-"):
        return site
    z = slab.positions[:, 2]
    top = np.flatnonzero(z >= z.max() - 1e-3)  # the step-edge row: one atom per repeat along y
    first = slab.positions[top[np.argmin(slab.positions[top, 1])]]
    if site == "step-ontop":
        return float(first[0]), float(first[1])
    step_y = slab.cell.lengths()[1] / SLAB_SIZE["211"][1]  # neighbour distance along the step edge
    return float(first[0]), float(first[1] + step_y / 2)


def initial_structure(system: dict) -> Atoms:
    slab = build_slab(system["metal"], system["facet"])
    n_metal = len(slab)
    adsorbate = adsorbate_atoms(system["adsorbate"])
    heavy_h, light_h = HEIGHTS[SITE_KIND[system["site"]]]
    height = light_h if system["adsorbate"] == "H" else heavy_h
    add_adsorbate(slab, adsorbate, height, position=site_position(slab, system["site"]))
    tags = np.asarray(slab.get_tags())
    tags[n_metal:] = 2
    slab.set_tags(tags)
    slab.set_constraint(FixAtoms(mask=tags == 0))
    slab.info.clear()
    return slab


def prerelax_emt(atoms: Atoms) -> tuple[Atoms, str]:
    """EMT relaxation of the free atoms with the adsorbate's bond held; the initial geometry if EMT misbehaves."""
    tags = np.asarray(atoms.get_tags())
    relaxed = atoms.copy()
    adsorbate = np.flatnonzero(tags == 2)
    hydrogen_only = len(adsorbate) == 1 and atoms.numbers[adsorbate[0]] == 1
    # EMT's H binds ~0.5 A too far out: a lone H keeps its placement, only the surface relaxes under it
    constraints = [FixAtoms(mask=(tags == 0) | ((tags == 2) & hydrogen_only))]
    if len(adsorbate) == 2:
        constraints.append(FixBondLengths([[int(adsorbate[0]), int(adsorbate[1])]]))
    relaxed.set_constraint(constraints)
    relaxed.calc = EMT()
    try:
        BFGS(relaxed, logfile=None).run(fmax=EMT_PRERELAX["fmax_eV_per_A"], steps=EMT_PRERELAX["max_steps"])
    except Exception:  # noqa: BLE001 - any EMT failure just means: keep the placement
        return atoms.copy(), "none (EMT failed)"
    relaxed.calc = None
    relaxed.set_constraint(FixAtoms(mask=tags == 0))
    metal = tags != 2
    surface_top = relaxed.positions[tags == 1, 2].max()
    binding_height = relaxed.positions[adsorbate[0], 2] - surface_top
    moved = np.linalg.norm(relaxed.positions[metal] - atoms.positions[metal], axis=1).max()
    distances = relaxed.get_distances(int(adsorbate[0]), np.flatnonzero(metal), mic=True)
    if not (-0.3 < binding_height < 3.0) or moved > 0.8 or distances.min() < 1.2:
        return atoms.copy(), "none (EMT moved the adsorbate off or into the surface)"
    return relaxed, "emt"


def rattled(atoms: Atoms, std: float, seed: int, system_index: int, fid: int) -> Atoms:
    copy = atoms.copy()
    if std > 0:
        rng = np.random.default_rng([seed, system_index, fid])
        free = np.asarray(copy.get_tags()) != 0
        positions = copy.get_positions()
        positions[free] += rng.normal(0.0, std, size=(int(free.sum()), 3))
        copy.set_positions(positions, apply_constraint=False)
    return copy


# -- DFT -----------------------------------------------------------------------------------------------------------
def make_calculator(txt: str | None):
    from gpaw import GPAW, PW, FermiDirac

    s = GPAW_SETTINGS
    return GPAW(mode=PW(s["ecut_eV"]), xc=s["xc"], kpts=tuple(s["kpts"]),
                occupations=FermiDirac(s["occupations"]["width_eV"]), spinpol=s["spinpol"], setups=s["setups"],
                convergence=dict(s["convergence"]), symmetry=dict(s["symmetry"]), txt=txt)


def single_point(atoms: Atoms, calc) -> Atoms:
    """``atoms`` labelled by ``calc``: a copy with a SinglePointCalculator and timings in info."""
    work = atoms.copy()
    work.calc = calc
    wall, cpu = time.perf_counter(), time.process_time()
    free_energy = work.get_potential_energy(force_consistent=True)
    energy_sigma0 = work.get_potential_energy()
    forces = work.get_forces(apply_constraint=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    iterations = getattr(calc, "scf", None)
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, energy=float(free_energy), free_energy=float(free_energy),
                                     forces=np.array(forces))
    out.info["energy_sigma0"] = float(energy_sigma0)
    out.info["wall_s"] = round(wall, 2)
    out.info["cpu_s"] = round(cpu, 2)
    if iterations is not None and getattr(iterations, "niter", None) is not None:
        out.info["scf_iterations"] = int(iterations.niter)
    return out


# -- files -----------------------------------------------------------------------------------------------------------
def frame_path(progress: Path, sid: str, fid: int) -> Path:
    return progress / f"{sid}__{fid}.extxyz"


#: per-atom columns; FixAtoms goes out as ``move_mask`` (False = fixed), which ASE >= 3.23 reads back as FixAtoms
COLUMNS = ["symbols", "positions", "move_mask", "tags"]


def write_frames(handle, frames: list[Atoms]) -> None:
    """extxyz with energy and forces, tags and the FixAtoms constraint of each frame.

    Written one frame per call: ASE 3.22's write_xyz takes the constraint of the first image for all of them.
    """
    for atoms in frames:
        atoms.arrays.pop("forces", None)  # the calculator's forces are written; no stale copy beside them
        write(handle, atoms, format="extxyz", columns=list(COLUMNS))


def write_atomic(path: Path, atoms: Atoms) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        write_frames(handle, [atoms])
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def read_failed(progress: Path) -> dict[str, str]:
    path = progress / "failed.jsonl"
    if not path.is_file():
        return {}
    failed = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            failed[row["sid"]] = row["error"]
    return failed


def record_failure(progress: Path, sid: str, error: str) -> None:
    with open(progress / "failed.jsonl", "a") as handle:
        handle.write(json.dumps({"sid": sid, "error": error}) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def compute(systems: list[dict], out: Path, limit: int | None, seed: int, txt_dir: Path | None,
            retry_failed: bool) -> int:
    progress = out / "progress"
    progress.mkdir(parents=True, exist_ok=True)
    failed = {} if retry_failed else read_failed(progress)
    done_now = 0
    total = sum(len(frames_of(s)) for s in systems)
    for system in systems:
        sid = system["sid"]
        todo = [f for f in frames_of(system) if not frame_path(progress, sid, f["fid"]).is_file()]
        if not todo or sid in failed:
            continue
        if limit is not None and done_now >= limit:
            break
        start = initial_structure(system)
        relaxed, how = prerelax_emt(start)
        txt = str(txt_dir / f"{sid}.txt") if txt_dir else None
        calc = make_calculator(txt)
        for frame in todo:
            if limit is not None and done_now >= limit:
                break
            atoms = rattled(relaxed, frame["rattle_std"], seed, system["index"], frame["fid"])
            try:
                labelled = single_point(atoms, calc)
            except Exception as exc:  # noqa: BLE001 - SCF failures are recorded, the run goes on
                record_failure(progress, sid, f"fid {frame['fid']}: {type(exc).__name__}: {exc}")
                print(f"FAILED {sid} fid {frame['fid']}: {exc}", flush=True)
                break
            labelled.info.update({
                "sid": sid, "fid": frame["fid"], "metal": system["metal"], "facet": f"fcc{system['facet']}",
                "adsorbate": system["adsorbate"], "site": system["site"], "split": system["split"],
                "rattle_std": frame["rattle_std"], "prerelax": how,
            })
            write_atomic(frame_path(progress, sid, frame["fid"]), labelled)
            done_now += 1
            finished = len(list(progress.glob("*.extxyz")))
            print(f"[{finished}/{total}] {sid} fid {frame['fid']}: E {labelled.get_potential_energy():.4f} eV, "
                  f"max|F| {np.abs(labelled.get_forces()).max():.3f} eV/A, {labelled.info['wall_s']:.1f} s wall, "
                  f"{labelled.info['cpu_s']:.1f} s cpu, prerelax {how}", flush=True)
    return done_now


def assemble(systems: list[dict], out: Path) -> dict:
    progress = out / "progress"
    rows = {"train": [], "test": []}
    timings = []
    for system in systems:
        for frame in frames_of(system):
            path = frame_path(progress, system["sid"], frame["fid"])
            if not path.is_file():
                continue
            atoms = read(str(path), format="extxyz")
            if not atoms.constraints:  # ASE 3.22 reads move_mask as a plain array: back to FixAtoms
                atoms.set_constraint(FixAtoms(mask=np.asarray(atoms.get_tags()) == 0))
            atoms.arrays.pop("move_mask", None)
            timings.append((atoms.info.get("wall_s"), atoms.info.get("cpu_s"), atoms.info.get("scf_iterations")))
            for key in INFO_KEYS_DROPPED_FROM_SPLITS:
                atoms.info.pop(key, None)
            rows[system["split"]].append(atoms)
    for split, frames in rows.items():
        if frames:
            tmp = out / f".{split}.extxyz.tmp"
            with open(tmp, "w") as handle:
                write_frames(handle, frames)
            tmp.replace(out / f"{split}.extxyz")
    settings = metadata(systems, rows, timings, out)
    (out / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return settings


def _stats(values: list) -> dict:
    values = [float(v) for v in values if v is not None]
    if not values:
        return {"n": 0}
    return {"n": len(values), "mean": round(float(np.mean(values)), 2), "median": round(float(np.median(values)), 2),
            "max": round(float(np.max(values)), 2), "min": round(float(np.min(values)), 2)}


def metadata(systems: list[dict], rows: dict, timings: list, out: Path) -> dict:
    try:
        import gpaw

        gpaw_version = gpaw.__version__
    except ImportError:
        gpaw_version = None
    import ase

    done_sids = {split: sorted({a.info["sid"] for a in frames}) for split, frames in rows.items()}
    return {
        "description": "GPAW single points of adsorbates on fcc metal slabs (bench/dft/make_gpaw_set.py)",
        "gpaw_version": gpaw_version,
        "ase_version": ase.__version__,
        "python": platform.python_version(),
        "gpaw": GPAW_SETTINGS,
        "xc": GPAW_SETTINGS["xc"],
        "cutoff_eV": GPAW_SETTINGS["ecut_eV"],
        "kpts": GPAW_SETTINGS["kpts"],
        "smearing": GPAW_SETTINGS["occupations"],
        "energy_label": "Mermin free energy (force-consistent); info energy_sigma0 = extrapolated to zero smearing",
        "vacuum_A_each_side": VACUUM,
        "lattice_constants_A": LATTICE,
        "slab_sizes": {facet: list(size) for facet, size in SLAB_SIZE.items()},
        "tags": "0 subsurface (FixAtoms), 1 surface, 2 adsorbate",
        "prerelax": EMT_PRERELAX,
        "rattle_stds_A": list(RATTLE_STDS),
        "seed": SEED,
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu": _cpu_model(),
        "timing_per_single_point": {
            "wall_s": _stats([t[0] for t in timings]),
            "cpu_s": _stats([t[1] for t in timings]),
            "scf_iterations": _stats([t[2] for t in timings]),
            "note": "one process, one thread, on a 2-core VM shared with other jobs (wall includes waiting)",
        },
        "counts": {
            "planned_systems": len(systems),
            "planned_structures": sum(len(frames_of(s)) for s in systems),
            "structures": {split: len(frames) for split, frames in rows.items()},
            "systems": {split: len(sids) for split, sids in done_sids.items()},
            "failed_systems": read_failed(out / "progress"),
        },
        "systems": {split: sids for split, sids in done_sids.items()},
        "assembled": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/data/gpaw_dft"))
    parser.add_argument("--limit", type=int, default=None, help="compute at most N new structures, then assemble")
    parser.add_argument("--assemble-only", action="store_true", help="write train/test/settings from finished frames")
    parser.add_argument("--plan", action="store_true", help="print the systems (sid, split) and exit")
    parser.add_argument("--retry-failed", action="store_true", help="try systems listed in progress/failed.jsonl")
    parser.add_argument("--gpaw-txt", type=Path, default=None, help="folder for GPAW's text logs (default: none)")
    args = parser.parse_args(argv)
    systems = plan_systems(SEED)
    if args.plan:
        for system in systems:
            print(system["index"], system["sid"], system["split"])
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    if args.gpaw_txt:
        args.gpaw_txt.mkdir(parents=True, exist_ok=True)
    if not args.assemble_only:
        started = time.perf_counter()
        count = compute(systems, args.out, args.limit, SEED, args.gpaw_txt, args.retry_failed)
        print(f"computed {count} structures in {time.perf_counter() - started:.0f} s", flush=True)
    settings = assemble(systems, args.out)
    print(json.dumps({"counts": settings["counts"], "timing": settings["timing_per_single_point"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
