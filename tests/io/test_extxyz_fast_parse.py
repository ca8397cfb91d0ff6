"""The extxyz fast path (``augkd.io.importers.extxyz._fast_frame``) gives exactly the rows of ASE's own frame parser.

Every file here is written by ``ase.io.write(..., format="extxyz")`` (or derived from one by a text edit) and
imported twice: once as it runs (fast path, with ASE's parser for the frames it leaves to it) and once with the
fast path switched off (ASE's parser for every frame). Rows, ids and counts must be identical, and each frame's
(atoms, results) from the fast path must equal ASE's Atoms + SinglePointCalculator results, info included.
"""

from __future__ import annotations

import lzma
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.io.extxyz import key_val_str_to_dict

from augkd.io.importers import ImportConfig, import_shard, plan_import
from augkd.io.importers import extxyz as fast

pytestmark = pytest.mark.skipif(not fast._FAST, reason="this ASE has no frame reader the fast path mirrors")

RNG = np.random.default_rng(7)


# -- comparing --------------------------------------------------------------------------------------------------------
def same(a, b) -> bool:
    """Deep equality with types: arrays by dtype, shape and values (NaN equal to NaN)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape
                and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, dict):
        return type(b) is dict and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and (a == b or (a != a and b != b))


def assert_same_atoms(fast_atoms: Atoms, ase_atoms: Atoms) -> None:
    """Equal in what a row keeps (ASE's Atoms may carry more arrays: a row drops them)."""
    kept = [key for key in ase_atoms.arrays if key in ("numbers", "positions", "tags")]
    assert list(fast_atoms.arrays) == kept
    for key in kept:
        assert same(fast_atoms.arrays[key], ase_atoms.arrays[key]), key
    assert same(fast_atoms.cell.array, ase_atoms.cell.array)
    assert same(fast_atoms.pbc, ase_atoms.pbc)
    assert [type(c) for c in fast_atoms.constraints] == [type(c) for c in ase_atoms.constraints]
    for mine, theirs in zip(fast_atoms.constraints, ase_atoms.constraints):
        assert same(mine.get_indices(), theirs.get_indices())


def rows_of(path: Path, monkeypatch, use_fast: bool, **config):
    """(rows by (source, frame), stats, frames ASE's parser read) of a whole import, without writing it."""
    monkeypatch.setattr(fast, "_FAST", use_fast)
    calls = []
    original = fast._parse_frame

    def counting(count_line, lines, natoms):
        calls.append(natoms)
        return original(count_line, lines, natoms)

    monkeypatch.setattr(fast, "_parse_frame", counting)
    plan = plan_import(ImportConfig(sources=(str(path),), **config))
    rows, stats = [], []
    for index in range(plan.shard_count):
        got, counts = import_shard(plan, index)
        rows += got
        stats.append(counts)
    return {(row.data["source"], row.data["frame"]): row for row in rows}, stats, len(calls)


def assert_same_rows(path: Path, monkeypatch, expect_fallbacks: int = 0, **config) -> dict:
    mine, mine_stats, fallbacks = rows_of(path, monkeypatch, True, **config)
    theirs, their_stats, every = rows_of(path, monkeypatch, False, **config)
    assert fallbacks == expect_fallbacks
    assert every == sum(counts["frames_read"] for counts in their_stats)  # ASE's parser read every frame
    assert mine_stats == their_stats
    assert list(mine) == list(theirs) and mine
    for key, row in theirs.items():
        other = mine[key]
        assert_same_atoms(other.atoms, row.atoms)
        assert other.atoms.calc is None and other.atoms.info == {} and row.atoms.info == {}
        assert type(other.energy) is type(row.energy) and other.energy == row.energy
        assert same(other.forces, row.forces)
        assert same(other.data, row.data)
    return theirs


def assert_same_frames(path: Path) -> int:
    """Each frame through ``_fast_frame`` against ASE's parser: atoms, info and calculator results. Returns how
    many frames the fast path took."""
    taken = 0
    with fast.open_text_bytes(path) as raw:
        text = raw.read().decode()
    lines = text.splitlines(keepends=True)
    at = 0
    while at < len(lines) and lines[at].strip():
        natoms = int(lines[at])
        frame = lines[at + 1:at + 2 + natoms]
        reference = fast._parse_frame(lines[at], frame, natoms)
        parsed = fast._fast_frame(frame[0], [line.split() for line in frame[1:]], natoms)
        if parsed is not None:
            taken += 1
            atoms, results = parsed
            assert_same_atoms(atoms, reference)
            assert same(atoms.info, reference.info)
            expected = reference.calc.results if reference.calc is not None else {}
            assert set(results) == set(expected) - {"magmoms", "charges", "energies", "stresses"}
            for key in results:
                assert same(results[key], expected[key]), key
        at += natoms + 2
    return taken


# -- files ------------------------------------------------------------------------------------------------------------
def labelled(atoms: Atoms, **results) -> Atoms:
    forces = RNG.normal(size=(len(atoms), 3))
    atoms.calc = SinglePointCalculator(atoms, forces=forces, **results)
    return atoms


def slab(fixed=True, tagged=True) -> Atoms:
    atoms = fcc111("Cu", size=(2, 2, 3), vacuum=8.0)
    add_adsorbate(atoms, "O", height=1.2, position="fcc")
    atoms.info.clear()
    tags = atoms.get_tags()
    atoms.set_tags(np.where(tags == 3, 0, 1) if tagged else 0)
    atoms.positions += RNG.normal(scale=0.05, size=atoms.positions.shape)
    if fixed:
        atoms.set_constraint(FixAtoms(indices=[0, 1, 2, 3]))
    return atoms


def write(path: Path, frames: list[Atoms]) -> Path:
    ase.io.write(path, frames, format="extxyz")
    return path


def variety() -> list[Atoms]:
    frames = []
    energy = float(RNG.normal(-50, 1))
    frames.append(labelled(slab(), energy=energy, free_energy=energy - 0.01))
    frames.append(labelled(slab(fixed=False), energy=-51.0, stress=RNG.normal(size=6)))  # voigt stress
    frames.append(labelled(slab(tagged=False), energy=-52.5, stress=RNG.normal(size=(3, 3))))  # 3x3 stress
    frames.append(labelled(slab(), free_energy=-49.25))  # free_energy only
    magnetic = slab()
    magnetic.set_initial_magnetic_moments(RNG.normal(size=len(magnetic)))
    magnetic.set_initial_charges(RNG.normal(size=len(magnetic)))
    frames.append(labelled(magnetic, energy=-48.0, magmoms=RNG.normal(size=len(magnetic)),
                           charges=RNG.normal(size=len(magnetic)), magmom=1.5, dipole=[0.1, 0.2, 0.3]))
    oc20 = slab()
    oc20.info.update(sid=1331004, fid=21, note="a relaxation step", flag=True, weights=np.array([1.0, 2.5]))
    frames.append(labelled(oc20, energy=-47.0))
    named = slab()
    named.info.update(sid="random1331004", fid="frame7", data={"x": [1, 2]})  # a JSON value: header parsed whole
    frames.append(labelled(named, energy=-46.0))
    skew = bulk("Ti", "hcp", a=2.95, c=4.68) * (2, 1, 1)
    skew.cell[2] += [0.3, -0.2, 0.0]
    skew.set_pbc([False, True, True])
    frames.append(labelled(skew, energy=-20.0))
    frames.append(labelled(Atoms("Ar", positions=[[0.1, 0.2, 0.3]], cell=[5, 5, 5], pbc=True), energy=-0.1))
    water = molecule("H2O")
    frames.append(labelled(water, energy=-14.2))  # no cell: no Lattice, pbc="F F F"
    frames.append(labelled(molecule("CH4"), energy=-24.0))
    unlabelled = slab()  # no calculator: dropped as no_energy, the same way
    frames.append(unlabelled)
    frames.append(labelled(slab(), energy=-45.0))
    return frames


@pytest.fixture
def mixed(tmp_path) -> Path:
    return write(tmp_path / "mixed.extxyz", variety())


def test_the_fast_path_reads_every_written_frame_as_ase_does(mixed, monkeypatch):
    rows = assert_same_rows(mixed, monkeypatch)
    assert assert_same_frames(mixed) == 13
    # the file really has what the cases are about
    assert rows[("mixed.extxyz", 0)].atoms.constraints and rows[("mixed.extxyz", 0)].atoms.get_tags().any()
    assert rows[("mixed.extxyz", 1)].data["stress"].shape == (3, 3)
    assert rows[("mixed.extxyz", 3)].energy == -49.25
    assert rows[("mixed.extxyz", 5)].data["sid"] == "1331004" and rows[("mixed.extxyz", 5)].data["fid"] == 21
    assert rows[("mixed.extxyz", 6)].data["sid"] == "random1331004" and rows[("mixed.extxyz", 6)].data["fid"] == 7
    assert list(rows[("mixed.extxyz", 7)].atoms.pbc) == [False, True, True]
    assert len(rows[("mixed.extxyz", 8)].atoms) == 1
    assert not rows[("mixed.extxyz", 9)].atoms.cell.any() and not rows[("mixed.extxyz", 9)].atoms.pbc.any()
    assert ("mixed.extxyz", 11) not in rows


def test_shards_index_and_xz_give_the_same_rows(mixed, monkeypatch, tmp_path):
    packed = tmp_path / "packed" / "mixed.extxyz.xz"
    packed.parent.mkdir()
    packed.write_bytes(lzma.compress(mixed.read_bytes()))
    assert_same_rows(packed, monkeypatch, shards=3)
    assert_same_rows(mixed, monkeypatch, index="1::2", shards=2)


def test_relaxations_keep_their_composition_runs(monkeypatch, tmp_path):
    frames = [labelled(slab(), energy=-50.0 - i) for i in range(4)]
    frames += [labelled(molecule("H2O"), energy=-14.0 - i) for i in range(3)]
    frames += [labelled(slab(), energy=-40.0 - i) for i in range(2)]
    rows = assert_same_rows(write(tmp_path / "runs.extxyz", frames), monkeypatch, shards=4)
    ids = [(rows[("runs.extxyz", i)].data["sid"], rows[("runs.extxyz", i)].data["fid"]) for i in range(9)]
    assert ids == [("runs.extxyz#0", 0), ("runs.extxyz#0", 1), ("runs.extxyz#0", 2), ("runs.extxyz#0", 3),
                   ("runs.extxyz#1", 0), ("runs.extxyz#1", 1), ("runs.extxyz#1", 2),
                   ("runs.extxyz#2", 0), ("runs.extxyz#2", 1)]


def test_z_column_instead_of_species(mixed, monkeypatch, tmp_path):
    lines = mixed.read_text().splitlines(keepends=True)
    out, at = [], 0
    while at < len(lines):
        natoms = int(lines[at])
        assert "Properties=species:S:1:" in lines[at + 1]
        out += [lines[at], lines[at + 1].replace("Properties=species:S:1:", "Properties=Z:I:1:")]
        for line in lines[at + 2:at + 2 + natoms]:
            symbol, rest = line.split(None, 1)
            out.append(f"{Atoms(symbol).numbers[0]} {rest}")
        at += natoms + 2
    path = tmp_path / "z.extxyz"
    path.write_text("".join(out))
    assert_same_rows(path, monkeypatch)
    assert assert_same_frames(path) == 13


# -- what falls back ---------------------------------------------------------------------------------------------------
def edit_frame(path: Path, frame: int, header=None, atom_line=None) -> None:
    """Rewrite one frame's header (``header(text)``) and atom lines (``atom_line(index, text)``)."""
    lines = path.read_text().splitlines(keepends=True)
    at = 0
    for _ in range(frame):
        at += int(lines[at]) + 2
    natoms = int(lines[at])
    if header is not None:
        lines[at + 1] = header(lines[at + 1])
    if atom_line is not None:
        for i in range(natoms):
            lines[at + 2 + i] = atom_line(i, lines[at + 2 + i])
    path.write_text("".join(lines))


def five(tmp_path: Path, name: str = "five.extxyz") -> Path:
    """Five slab frames: species, pos, move_mask, tags, forces (columns 0, 1-3, 4, 5, 6-8)."""
    return write(tmp_path / name, [labelled(slab(), energy=-50.0 - i) for i in range(5)])


def tokens(edit):
    """An atom-line editor from ``edit(index, tokens)`` (tokens edited in place)."""
    def atom_line(i, line):
        fields = line.split()
        edit(i, fields)
        return " ".join(fields) + "\n"
    return atom_line


@pytest.mark.parametrize("case", [
    "extra_token", "move_mask_xyz", "string_magmoms", "lowercase_symbols", "unknown_type", "per_atom_energy",
])
def test_frames_the_fast_path_does_not_map_fall_back_to_ase(case, monkeypatch, tmp_path):
    path = five(tmp_path)
    if case == "extra_token":  # ASE ignores tokens past the layout's columns
        edit_frame(path, 2, atom_line=lambda i, line: line.rstrip("\n") + " 9.5\n" if i == 3 else line)
    elif case == "move_mask_xyz":  # FixCartesian per atom: no FixAtoms in the row
        edit_frame(path, 2, header=lambda h: h.replace("move_mask:L:1", "move_mask:L:3"),
                   atom_line=tokens(lambda i, t: t.__setitem__(4, f"{t[4]} {t[4]} F")))
    elif case == "string_magmoms":  # a string column of a calculator property: ASE converts it to floats
        edit_frame(path, 2, header=lambda h: h.replace(":forces:R:3", ":forces:R:3:magmoms:S:1"),
                   atom_line=lambda i, line: line.rstrip("\n") + f" {i}.5\n")
    elif case == "lowercase_symbols":  # capitalized by ASE; the fast path maps it too (no fallback)
        edit_frame(path, 2, atom_line=lambda i, line: line.replace("Cu ", "cu ", 1))
    elif case == "unknown_type":  # ASE refuses it (the import fails the same way)
        edit_frame(path, 2, header=lambda h: h.replace("tags:I:1", "tags:X:1"))
    elif case == "per_atom_energy":  # a per-atom column named energy reaches the calculator's energy
        edit_frame(path, 2, header=lambda h: h.replace(":forces:R:3", ":forces:R:3:free_energy:R:1"),
                   atom_line=lambda i, line: line.rstrip("\n") + f" {i}.25\n")
    if case == "unknown_type":
        with pytest.raises(Exception) as mine:
            rows_of(path, monkeypatch, True)
        with pytest.raises(Exception) as theirs:
            rows_of(path, monkeypatch, False)
        assert str(mine.value) == str(theirs.value) and "frame 2" in str(mine.value)
        return
    assert_same_rows(path, monkeypatch, expect_fallbacks=0 if case == "lowercase_symbols" else 1)


def test_an_error_inside_the_fast_path_falls_back(monkeypatch, tmp_path):
    path = five(tmp_path)

    def broken(spec):
        raise RuntimeError("not mapped")

    monkeypatch.setattr(fast, "_layout", broken)
    assert_same_rows(path, monkeypatch, expect_fallbacks=5)


def test_malformed_frames_fail_as_they_did(monkeypatch, tmp_path):
    path = five(tmp_path)
    edit_frame(path, 3, atom_line=tokens(lambda i, t: t.__setitem__(4, "X") if i == 5 else None))  # ASE: False
    rows = assert_same_rows(path, monkeypatch, expect_fallbacks=1)
    assert 5 in rows[("five.extxyz", 3)].atoms.constraints[0].get_indices()
    unknown = five(tmp_path, "unknown.extxyz")
    edit_frame(unknown, 1, atom_line=lambda i, line: line.replace("Cu ", "Qq ", 1) if i == 0 else line)
    huge_tag = five(tmp_path, "huge_tag.extxyz")
    edit_frame(huge_tag, 1, atom_line=tokens(lambda i, t: t.__setitem__(5, "99999999999") if i == 2 else None))
    bad_dipole = five(tmp_path, "bad_dipole.extxyz")
    edit_frame(bad_dipole, 1, header=lambda h: h.replace(" pbc=", " dipole=abc pbc="))
    for broken in (unknown, huge_tag, bad_dipole):
        errors = []
        for use_fast in (True, False):
            with pytest.raises(Exception) as caught:
                rows_of(broken, monkeypatch, use_fast)
            errors.append((type(caught.value), str(caught.value)))
        assert errors[0] == errors[1], broken.name


# -- the header -------------------------------------------------------------------------------------------------------
HEADERS = [
    'Lattice="3.6 0.0 0.0 0.0 3.6 0.0 0.0 0.0 3.6" Properties=species:S:1:pos:R:3 energy=-1.5 pbc="T T F"',
    'energy=5 free_energy=5.0 a=1 b=2 a=3 flag  other=T x=" " s="1 2 3" t="1,2,3" big=123456789012345678901234',
    'sid=random1331004 fid=frame21 note="hello world" nan=nan inf=-inf e=1e-05 v="T F T"',
    'd="_JSON {\\"x\\": 1}" energy=2',  # escapes and JSON: parsed whole
    'a="" b c=1',  # an empty quoted value swallows what follows in ASE: parsed whole
    "a = b c= d e =f",
    "Lattice=[1 0 0 0 1 0 0 0 1] key='single quoted' brace={1 2 3}",
    'stress="1 2 3 4 5 6 7 8 9" virial="1 0 0 0 1 0 0 0 1" uid=007 UID=abc',
    "only_a_comment_word",
    "  tabs\tand=spaces\t\tx=1  ",
]


@pytest.mark.parametrize("header", HEADERS)
def test_headers_parse_as_ase_parses_them(header):
    line = header.strip()
    expected = key_val_str_to_dict(line)
    for _ in range(2):  # the second time from the token cache
        got = fast._header_dict(line)
        assert same(got, expected)
    for value in got.values():  # the caller owns what it gets
        if isinstance(value, np.ndarray):
            value[...] = 0
    assert same(fast._header_dict(line), expected)


def test_bad_headers_fail_as_ase_fails():
    for header in ('Lattice="1 2 3"', "=x y"):
        with pytest.raises(Exception) as theirs:
            key_val_str_to_dict(header)
        with pytest.raises(type(theirs.value)):
            fast._header_dict(header)
