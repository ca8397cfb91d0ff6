"""Jitter: teacher-labelled displaced copies of existing frames, rattled or adversarial (shared spec, algorithms.md
"Jitter"). One displacement code path serves the offline generator (``jitter_frames``) and the trainer's online
option.

Which atoms move: every free atom moves exactly ``norm`` Å (a per-atom norm); a fixed atom does not move at all.
Fixed = held by FixAtoms, plus tag 0 where a structure's tags carry information (some tag is non-zero: OC20's
0 subsurface / 1 surface / 2 adsorbate). A structure with neither (no fixed atom, every tag 0) is refused unless
``all_atoms_free`` is set, which lets all of its atoms move.

Rattle: δ_i = norm·r_i/|r_i| with r_i ~ N(0, I₃) from a numpy generator seeded by (seed, parent identity, copy);
the identity hashes the parent row's sid, fid, atomic numbers and positions, so a row gets the same displacement
whatever batch, shard or process it lands in (and a jittered row jittered again gets new directions).

Adversarial: projected gradient ascent of the student–teacher discrepancy L(X + δ) on the per-atom sphere
|δ_i| = norm:  δ ← P(δ + α·ĝ), ĝ_i = g_i/|g_i|, g = ∂L/∂δ, P(v)_i = norm·v_i/|v_i|  (``steps`` times, α =
``step_size``, default ``norm``). Copy 0 starts at δ = 0, so one step is the paper's δ = norm·ĝ(X); copies ≥ 1
start at their rattle point (a random start: from δ = 0 every copy would be the same). The sphere, not the ball:
every free atom moves exactly ``norm``, as in rattle mode, so the two modes differ only in direction.
An atom whose g_i is zero or not finite (an atom no model sees, a force error exactly zero), or whose v_i is zero,
takes its rattle direction instead; ``stats["fallback_directions"]`` counts them.
The student runs in eval mode. Gradients pass through the teacher when it is differentiable (``ckpt:`` models,
CHGNet and SevenNet: ``teacher.differentiable``); otherwise (fairchem checkpoints, ASE calculators such as EMT) the
teacher's outputs at X + δ are constants and the gradient flows through the student only. L is each structure's own
KD loss (the loss it would have in a batch of its own), summed over the batch: a structure's step does not depend on
its batch companions.

Attack losses (``ATTACK_LOSSES``): ``forces`` = α_F·L2MAE(F_s, F_t) over free atoms, the force term of vanilla(1)
(default, the paper's); ``vanilla1`` = α_E·|E_s − E_t|/σ_E + α_F·L2MAE(F_s, F_t)/σ_F with α = (1, 100) and σ the
student's training normaliser (from its checkpoint); ``vanilla2`` = MAE of per-atom energies / σ_E. The feature
losses (n2n, e2n, v2v) need the student's projection heads, which exported checkpoints do not carry.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
import torch
from ase.data import chemical_symbols

from augkd.errors import ConfigError
from augkd.generators.label import CachedOutputs, check_teacher_offers, teacher_row_data
from augkd.records import LabelledFrame, plain_atoms
from augkd.teachers import DEFAULT_TEACHER, Teacher, TeacherSpec, TorchTeacher, resolve_device

MODES = ("rattle", "adversarial")
ATTACK_LOSSES = ("forces", "vanilla1", "vanilla2")
#: vanilla(1) weights of the attack loss (the training defaults, OCP's α_E and α_F)
ATTACK_ALPHA_ENERGY, ATTACK_ALPHA_FORCE = 1.0, 100.0
#: norms above this (Å) are refused unless ``force_large_norm``: atoms would collide or leave their basin
LARGE_NORM = 1.0
#: ``JitterConfig`` fields that change how the work runs, not what it produces
EXECUTION_FIELDS = ("device", "batch_size")
#: structures per model call when ``batch_size`` is not given. On a CPU, larger passes run slower per atom (CHGNet,
#: bench/jitter_throughput.py on 2 cores: 3.7 rattle rows/s at 2 structures per call, 1.9 at 16).
DEFAULT_BATCH_SIZE = {"cuda": 16, "cpu": 2}
#: row ``data`` keys of a parent that describe its labels, not its structure: dropped from its displaced copies
_STALE_KEY_PREFIX = "teacher_"


# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------
def check_norm(norm: Any, force_large_norm: bool = False) -> float:
    """``norm`` as a float; ``ConfigError`` unless 0 < norm ≤ 1 Å (or larger with ``force_large_norm``)."""
    try:
        value = float(norm)
    except (TypeError, ValueError):
        raise ConfigError(f"jitter norm {norm!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"jitter norm {norm} must be > 0 Å")
    if value > LARGE_NORM and not force_large_norm:
        raise ConfigError(
            f"jitter norm {norm} Å is above {LARGE_NORM} Å (atoms would collide or leave their basin); "
            "force it if you mean it (--force-large-norm)"
        )
    return value


def check_mode(mode: Any) -> str:
    if mode not in MODES:
        raise ConfigError(f"unknown jitter mode {mode!r} (choose {' or '.join(MODES)})")
    return mode


def check_attack_loss(name: Any) -> str:
    if name in ("n2n", "e2n", "v2v"):
        raise ConfigError(
            f"attack loss {name} needs the student's KD projection head, which exported checkpoints do not carry "
            f"(choose {', '.join(ATTACK_LOSSES)})"
        )
    if name not in ATTACK_LOSSES:
        raise ConfigError(f"unknown attack loss {name!r} (choose {', '.join(ATTACK_LOSSES)})")
    return name


@dataclass(frozen=True)
class JitterConfig:
    """Everything that determines a jittered dataset (``EXECUTION_FIELDS`` only change how it is computed).

    norm: displacement of every free atom (Å). mode: rattle | adversarial. copies: displaced copies per input row.
    seed: seeds the rattle directions (and adversarial fallbacks/random starts). teacher, teacher_kwargs: the
    labelling (and attacked) teacher, a ``TeacherSpec``'s spec and kwargs. student: model checkpoint (adversarial only).
    steps, step_size (Å, default norm), attack_loss: the ascent (adversarial only). features, atom_energy,
    feature_dtype: cached teacher outputs to store like ``augkd label`` (``teacher_*`` row keys, written only
    when one of them is asked for). all_atoms_free: let every atom of a structure without fixed/tag information
    move (else such input is refused). force_large_norm: allow norm > 1 Å. device: where teacher and student
    run (auto: CUDA when visible). batch_size: structures per batched model call (None: ``DEFAULT_BATCH_SIZE``
    for the teacher's device).
    """

    norm: float
    mode: str = "rattle"
    copies: int = 1
    seed: int = 0
    teacher: str = DEFAULT_TEACHER
    teacher_kwargs: dict = field(default_factory=dict, hash=False)
    student: str | None = None
    steps: int = 1
    step_size: float | None = None
    attack_loss: str = "forces"
    features: tuple[str, ...] = ()
    atom_energy: bool = False
    feature_dtype: str = "float16"
    all_atoms_free: bool = False
    force_large_norm: bool = False
    device: str = "auto"
    batch_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", check_norm(self.norm, self.force_large_norm))
        check_mode(self.mode)
        object.__setattr__(self, "features", self.outputs.features)
        for name, value, least in (("copies", self.copies, 1), ("steps", self.steps, 1),
                                   ("batch_size", self.batch_size, 1), ("seed", self.seed, 0)):
            if name == "batch_size" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfigError(f"jitter {name} {value!r} must be an integer ≥ {least}")
        if self.step_size is not None and not (
            isinstance(self.step_size, (int, float)) and math.isfinite(self.step_size) and self.step_size > 0
        ):
            raise ConfigError(f"jitter step size {self.step_size!r} must be > 0 Å")
        check_attack_loss(self.attack_loss)
        if not isinstance(self.teacher_kwargs, dict):
            raise ConfigError(f"teacher kwargs {self.teacher_kwargs!r} must be a mapping")
        _ = self.teacher_spec  # checked once, here
        if self.mode == "adversarial" and not self.student:
            raise ConfigError("jitter mode adversarial needs a student checkpoint (--student CKPT)")
        if self.mode == "rattle":
            given = [name for name, value, default in (
                ("student", self.student, None), ("steps", self.steps, 1), ("step_size", self.step_size, None),
                ("attack_loss", self.attack_loss, "forces"),
            ) if value != default]
            if given:
                raise ConfigError(f"jitter mode rattle takes no {', '.join(given)} (adversarial options)")

    @cached_property
    def teacher_spec(self) -> TeacherSpec:
        return TeacherSpec(self.teacher, self.teacher_kwargs)

    @cached_property
    def outputs(self) -> CachedOutputs:
        """The teacher outputs cached in the rows (none unless features or atom_energy are asked for)."""
        return CachedOutputs(self.features, self.atom_energy, self.feature_dtype)

    @property
    def ascent_step(self) -> float:
        return self.norm if self.step_size is None else float(self.step_size)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> JitterConfig:
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown jitter config key(s) {sorted(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # tuples → lists: the form it takes in JSON files


# ----------------------------------------------------------------------------------------------------------------
# Models: the student and what a process loads once
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Student:
    """The attacked model (eval mode, weights frozen) and the training normaliser's scales (vanilla1 attack)."""

    model: torch.nn.Module
    name: str
    energy_scale: float = 1.0  # eV
    force_scale: float = 1.0  # eV/Å

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def load_student(path: str, device: str = "cpu") -> Student:
    from augkd.models.checkpoint import load_model

    model, extra = load_model(path)
    model = model.to(device).eval()
    model.requires_grad_(False)  # the attack differentiates with respect to positions only
    normalizer = extra.get("normalizer") or {}
    return Student(
        model=model,
        name=f"{model.name} ({path})",
        energy_scale=float(normalizer.get("energy_scale", 1.0)),
        force_scale=float(normalizer.get("force_scale", 1.0)),
    )


@dataclass
class JitterContext:
    teacher: Teacher
    student: Student | None


@lru_cache(maxsize=2)
def _student(path: str, device: str) -> Student:
    return load_student(path, device)


def prepare(config: JitterConfig) -> JitterContext:
    """The teacher and (adversarial) student of ``config``, loaded once per process; checks the asked features."""
    device = resolve_device(config.device)
    teacher = config.teacher_spec.load(device)
    student = _student(config.student, device) if config.student else None
    check_teacher_offers(teacher, config.outputs)
    return JitterContext(teacher, student)


# ----------------------------------------------------------------------------------------------------------------
# Displacements (shared by the offline generator and online training)
# ----------------------------------------------------------------------------------------------------------------
def free_atoms(
    fixed: torch.Tensor, tags: torch.Tensor, batch_index: torch.Tensor, num_systems: int, all_atoms_free: bool = False
):
    """(free (N,) bool, uninformed (B,) bool) for a batch: see the module docstring for the rule.

    ``uninformed`` marks structures without any fixed atom or non-zero tag; their atoms are free only when
    ``all_atoms_free`` (callers refuse them otherwise), else fixed.
    """
    fixed = fixed.bool()
    tagged = torch.zeros(num_systems, dtype=torch.bool, device=fixed.device)
    tagged[batch_index[tags != 0]] = True
    has_fixed = torch.zeros(num_systems, dtype=torch.bool, device=fixed.device)
    has_fixed[batch_index[fixed]] = True
    held = fixed | ((tags == 0) & tagged[batch_index])
    uninformed = ~(tagged | has_fixed)
    if not all_atoms_free:
        held = held | uninformed[batch_index]
    return ~held, uninformed


def row_identity(frame: LabelledFrame) -> tuple[int, ...]:
    """Four 32-bit words identifying a row: a hash of its sid, fid, atomic numbers and positions."""
    digest = hashlib.sha256()
    digest.update(json.dumps([str(frame.data.get("sid")), str(frame.data.get("fid"))]).encode())
    digest.update(np.ascontiguousarray(frame.atoms.numbers, dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(frame.atoms.positions, dtype="<f8").tobytes())
    return tuple(int.from_bytes(digest.digest()[i : i + 4], "little") for i in range(0, 16, 4))


def rattle_directions(keys: Sequence[Sequence[int]], natoms: Sequence[int]) -> torch.Tensor:
    """(Σ natoms, 3) float64 unit vectors r_i/|r_i|, r_i ~ N(0, I₃); each structure's from its own key's generator."""
    blocks = []
    for key, n in zip(keys, natoms):
        draws = np.random.default_rng(np.random.SeedSequence([int(k) for k in key])).standard_normal((int(n), 3))
        length = np.linalg.norm(draws, axis=1, keepdims=True)
        blocks.append(np.where(length > 0, draws / np.where(length > 0, length, 1.0), [1.0, 0.0, 0.0]))
    return torch.from_numpy(np.concatenate(blocks) if blocks else np.zeros((0, 3)))


def onto_sphere(vectors: torch.Tensor, free: torch.Tensor, norm: float, fallback: torch.Tensor):
    """(δ, fallbacks): δ_i = norm·v_i/|v_i| on free atoms (``fallback`` rows, unit vectors, where v_i is zero or not
    finite), exactly 0 on the others; ``fallbacks`` counts the free atoms that took their fallback."""
    vectors = vectors.to(torch.float64)
    length = torch.linalg.vector_norm(vectors, dim=1, keepdim=True)
    tiny = torch.finfo(torch.float64).tiny
    usable = torch.isfinite(vectors).all(1, keepdim=True) & torch.isfinite(length) & (length > tiny)
    unit = torch.where(usable, vectors / torch.where(usable, length, torch.ones_like(length)), fallback.to(vectors))
    delta = torch.where(free.unsqueeze(1), norm * unit, torch.zeros_like(unit))
    return delta, int((~usable.squeeze(1) & free).sum())


def attack_loss(
    kind: str, student_out, teacher_out, free: torch.Tensor, batch_index: torch.Tensor, num_systems: int,
    energy_scale: float = 1.0, force_scale: float = 1.0,
) -> torch.Tensor:
    """Σ over structures of each structure's own attack loss ``kind`` (see the module docstring)."""
    from augkd.reductions import LossBatch, energy_loss, force_loss, weighted_mean

    dtype = student_out.forces.dtype
    device = student_out.forces.device
    # weights that turn the losses' batch means into sums of per-structure means
    if kind == "vanilla2":
        atom_count = torch.zeros(num_systems, dtype=dtype, device=device).index_add_(
            0, batch_index, torch.ones_like(batch_index, dtype=dtype)
        )
        per_atom = (atom_count.sum() / atom_count)[batch_index]
        error = (student_out.atom_energy - teacher_out.atom_energy.to(student_out.atom_energy)).abs() / energy_scale
        return weighted_mean(error, per_atom)
    info = LossBatch(batch=batch_index, num_systems=num_systems, free=free)
    free_count = torch.zeros(num_systems, dtype=dtype, device=device).index_add_(0, batch_index, free.to(dtype))
    per_free = free_count.sum() / free_count.clamp_min(1)
    total = ATTACK_ALPHA_FORCE * force_loss(
        student_out.forces, teacher_out.forces.to(device), info, force_scale=force_scale, sample_weight=per_free
    )
    if kind == "vanilla1":
        everyone = torch.full((num_systems,), float(num_systems), dtype=dtype, device=device)
        total = total + ATTACK_ALPHA_ENERGY * energy_loss(
            student_out.energy, teacher_out.energy.to(device), energy_scale=energy_scale, sample_weight=everyone
        )
    return total


def _teacher_constants(teacher: Teacher, batch, needs_atom_energy: bool):
    """The teacher's outputs for ``batch`` as constants (no graph), from its batched labels."""
    from augkd.models.interface import ModelOutput

    properties = ["energy", "forces"] + (["atom_energy"] if needs_atom_energy else [])
    labels = teacher.label_batch(batch.to_ase(), properties)
    device = batch.pos.device
    return ModelOutput(
        energy=torch.tensor([label.energy for label in labels], dtype=torch.float64, device=device),
        forces=torch.from_numpy(np.concatenate([label.forces for label in labels])).to(device),
        atom_energy=torch.from_numpy(np.concatenate([label.atom_energy for label in labels])).to(device)
        if needs_atom_energy else None,
    )


def attack_gradient(batch, delta: torch.Tensor, free: torch.Tensor, student: Student, teacher: Teacher, kind: str):
    """(∂L/∂δ at ``delta`` (N, 3) float64, L summed over structures) for the batch displaced by ``delta``.

    ``batch``: an AtomicData batch holding the undisplaced positions (float64 keeps them exact).
    """
    from augkd.models.data import cast_batch

    batch_index = batch.batch.long()
    num_systems = int(batch.natoms.numel())
    leaf = delta.detach().to(batch.pos.dtype).clone().requires_grad_(True)
    moved = batch.clone()
    moved.pos = batch.pos.detach() + leaf
    with torch.enable_grad():
        student_out = student.model(cast_batch(moved, student.dtype))
        if isinstance(teacher, TorchTeacher) and teacher.differentiable:
            teacher_out = teacher.predict(moved, differentiable=True)
        else:
            still = batch.clone()
            still.pos = moved.pos.detach()
            teacher_out = _teacher_constants(teacher, still, kind == "vanilla2")
        device = student_out.forces.device
        loss = attack_loss(
            kind, student_out, teacher_out, free.to(device), batch_index.to(device), num_systems,
            student.energy_scale, student.force_scale,
        )
        (gradient,) = torch.autograd.grad(loss, leaf, allow_unused=True)
    if gradient is None:
        gradient = torch.zeros_like(leaf)
    return gradient.detach().to(torch.float64), float(loss.detach())


def adversarial_displacement(
    batch, free: torch.Tensor, directions: torch.Tensor, random_start: torch.Tensor, student: Student,
    teacher: Teacher, norm: float, steps: int = 1, step_size: float | None = None, kind: str = "forces",
):
    """(δ (N, 3) float64, stats) by projected ascent on the per-atom sphere (module docstring).

    ``directions``: each atom's rattle direction (fallback and random start); ``random_start`` (B,) bool: the
    structures that start at their rattle point instead of δ = 0. The student is put in eval mode for the attack
    and restored afterwards.
    """
    step_size = norm if step_size is None else step_size
    batch_index = batch.batch.long()
    free = free.to(batch.pos.device)
    directions = directions.to(batch.pos.device)
    start = random_start.to(batch.pos.device)[batch_index].unsqueeze(1) & free.unsqueeze(1)
    delta = torch.where(start, norm * directions, torch.zeros_like(directions))
    was_training = student.model.training
    student.model.eval()
    fallbacks, first_loss = 0, None
    try:
        for _ in range(steps):
            gradient, loss = attack_gradient(batch, delta, free, student, teacher, kind)
            first_loss = loss if first_loss is None else first_loss
            ascent, bad_gradients = onto_sphere(gradient, free, 1.0, directions)
            delta, bad_steps = onto_sphere(delta + step_size * ascent, free, norm, directions)
            fallbacks += bad_gradients + bad_steps
    finally:
        student.model.train(was_training)
    return delta, {"fallback_directions": fallbacks, "attack_loss_start": first_loss}


# ----------------------------------------------------------------------------------------------------------------
# The offline generator
# ----------------------------------------------------------------------------------------------------------------
def check_elements(frames: Sequence[LabelledFrame], teacher: Teacher, student: Student | None) -> None:
    """``ConfigError`` naming an element the teacher cannot label or the student cannot embed."""
    numbers = sorted({int(z) for frame in frames for z in frame.atoms.numbers})
    if teacher.elements is not None:
        missing = [chemical_symbols[z] for z in numbers if chemical_symbols[z] not in teacher.elements]
        if missing:
            raise ConfigError(f"teacher {teacher.identity.name} cannot label element(s) {', '.join(missing)}")
    if student is not None:
        embedding = getattr(student.model, "embedding", None)
        rows = embedding.num_embeddings if isinstance(embedding, torch.nn.Embedding) else None
        bad = [z for z in numbers if z < 1 or (rows is not None and z >= rows)]
        if bad:
            names = ", ".join(f"{chemical_symbols[z] if z < len(chemical_symbols) else '?'} (Z={z})" for z in bad)
            limit = f"Z 1..{rows - 1}" if rows is not None else "real elements only"
            raise ConfigError(f"student {student.name} cannot take element(s) {names}; it embeds {limit}")


def _frames_free_atoms(frames: Sequence[LabelledFrame], all_atoms_free: bool):
    """Per-frame free masks by the shared rule, and the first frame that has no fixed/tag information."""
    from augkd.records import fixed_mask

    natoms = [len(f.atoms) for f in frames]
    fixed = torch.from_numpy(np.concatenate([fixed_mask(f.atoms) for f in frames] or [np.zeros(0, dtype=bool)]))
    tags = torch.from_numpy(np.concatenate([f.atoms.get_tags() for f in frames] or [np.zeros(0, dtype=np.int64)]))
    index = torch.repeat_interleave(torch.arange(len(frames)), torch.tensor(natoms, dtype=torch.long))
    free, uninformed = free_atoms(fixed, tags, index, len(frames), all_atoms_free)
    masks = list(torch.split(free, natoms))
    return masks, uninformed


def _describe(frame: LabelledFrame, index: int) -> str:
    return f"row {index} (sid {frame.data.get('sid')!r}, fid {frame.data.get('fid')!r})"


def batch_size_for(teacher: Teacher) -> int:
    """Structures per model call when the config does not say: by the type of the teacher's device."""
    return DEFAULT_BATCH_SIZE.get(teacher.device.type, DEFAULT_BATCH_SIZE["cpu"])


def jitter_frames(
    frames: Sequence[LabelledFrame],
    config: JitterConfig,
    teacher: Teacher,
    student: Student | None,
    encode: Callable,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[LabelledFrame], dict[str, Any]]:
    """``config.copies`` displaced, teacher-labelled copies of every frame, in input order (a pure function).

    A copy's row: the displaced structure (same tags and FixAtoms), the teacher's energy and forces as its labels,
    and ``data`` = the parent's data without its ``teacher_*`` keys (they describe other positions) plus
    ``origin`` (the mode), ``parent_origin``, ``parent_sid``, ``parent_fid``, ``jitter_norm`` (Å),
    ``jitter_mode``, ``copy``, ``teacher`` (name) and, when ``config`` asks for cached outputs, the ``teacher_*``
    keys of ``augkd label``. ``sid`` and ``fid`` stay the parent's (the same system: splits by sid keep copies
    with their parents). Frames without a free atom have nothing to displace: they are skipped and counted.
    ``progress(n)`` is called with the number of input frames done after every batch.

    stats: rows_in, rows_out, skipped_no_free_atoms, fallback_directions (adversarial), attack_loss_start (mean
    per structure at the first ascent step), teacher_differentiable.
    """
    frames = list(frames)
    if config.mode == "adversarial" and student is None:
        raise ConfigError("jitter mode adversarial needs a student (load it with prepare(config))")
    check_elements(frames, teacher, student if config.mode == "adversarial" else None)
    check_teacher_offers(teacher, config.outputs)
    attacks_atom_energy = config.mode == "adversarial" and config.attack_loss == "vanilla2"
    if attacks_atom_energy and "atom_energy" not in teacher.offered_properties:
        raise ConfigError(f"attack loss vanilla2 needs per-atom energies; teacher {teacher.identity.name} has none")
    masks, uninformed = _frames_free_atoms(frames, config.all_atoms_free)
    if uninformed.any() and not config.all_atoms_free:
        first = int(torch.nonzero(uninformed)[0])
        raise ConfigError(
            f"{_describe(frames[first], first)} has no fixed atoms and no tags, so which atoms may move is unknown; "
            "pass all_atoms_free (--all-atoms-free) to move every atom of such rows"
        )
    jobs = [(i, copy) for i, mask in enumerate(masks) if mask.any() for copy in range(config.copies)]
    identities = [row_identity(frame) for frame in frames]
    properties = config.outputs.properties
    out: list[LabelledFrame] = []
    stats: dict[str, Any] = {
        "rows_in": len(frames),
        "rows_out": 0,
        "skipped_no_free_atoms": sum(1 for mask in masks if not mask.any()),
        "fallback_directions": 0,
        "attack_loss_start": None,
        "teacher_differentiable": isinstance(teacher, TorchTeacher) and teacher.differentiable,
    }
    losses: list[float] = []
    done = 0
    batch_size = config.batch_size or batch_size_for(teacher)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        parents = [frames[i] for i, _ in chunk]
        natoms = [len(frame.atoms) for frame in parents]
        free = torch.cat([masks[i] for i, _ in chunk])
        keys = [[config.seed, *identities[i], copy] for i, copy in chunk]
        directions = rattle_directions(keys, natoms)
        if config.mode == "rattle":
            delta, _ = onto_sphere(directions, free, config.norm, directions)
        else:
            delta, info = _attack(parents, chunk, free, directions, config, teacher, student)
            stats["fallback_directions"] += info["fallback_directions"]
            losses.append(info["attack_loss_start"])  # summed over the chunk's structures
        displaced = _displaced(parents, delta.cpu().numpy(), natoms)
        labels = teacher.label_batch(displaced, properties)
        for (i, copy), atoms, label in zip(chunk, displaced, labels):
            out.append(_row(frames[i], atoms, label, copy, config, teacher, encode))
        end = start + batch_size
        finished = jobs[end][0] if end < len(jobs) else len(frames)  # input frames whose copies are all made
        if progress is not None and finished > done:
            progress(finished - done)
            done = finished
    if progress is not None and len(frames) > done:  # only frames without free atoms, or none at all
        progress(len(frames) - done)
    stats["rows_out"] = len(out)
    if losses:
        stats["attack_loss_start"] = sum(losses) / len(jobs)
    return out, stats


def _attack(parents, chunk, free, directions, config: JitterConfig, teacher: Teacher, student: Student):
    from augkd.models.data import atoms_to_batch

    batch = atoms_to_batch([frame.atoms for frame in parents], dtype=torch.float64).to(student.device)
    random_start = torch.tensor([copy > 0 for _, copy in chunk], dtype=torch.bool)
    return adversarial_displacement(
        batch, free, directions, random_start, student, teacher, config.norm, config.steps, config.ascent_step,
        config.attack_loss,
    )


def _displaced(parents: Sequence[LabelledFrame], delta: np.ndarray, natoms: Sequence[int]):
    out, first = [], 0
    for frame, n in zip(parents, natoms):
        atoms = plain_atoms(frame.atoms)
        atoms.positions = frame.atoms.positions + delta[first : first + n]
        out.append(atoms)
        first += n
    return out


def _row(parent: LabelledFrame, atoms, labels, copy: int, config: JitterConfig, teacher: Teacher, encode: Callable):
    data = {key: value for key, value in parent.data.items() if not key.startswith(_STALE_KEY_PREFIX)}
    data.update(
        origin=config.mode,
        parent_origin=parent.data.get("origin"),
        parent_sid=parent.data.get("sid"),
        parent_fid=parent.data.get("fid"),
        jitter_norm=config.norm,
        jitter_mode=config.mode,
        copy=copy,
        teacher=teacher.identity.name,
    )
    if config.outputs:
        data.update(teacher_row_data(labels, teacher.identity.name, config.outputs, encode))
    forces = np.asarray(labels.forces, dtype=np.float64)
    return LabelledFrame(atoms=atoms, energy=float(labels.energy), forces=forces, data=data)
