"""The d1M generator: sampled systems → teacher relaxations → filtered, subsampled, labelled frames.

``generate_shard(config, shard_index)`` is a pure function of its arguments (the teacher and sampler it needs are
built once per process and reused), so any executor can run any shard anywhere.

A shard's adslabs, and the clean slabs the filters compare them with, go to one relaxer run
(``relax_batched`` or ``relax_each``, one contract); the slabs are relaxed for that shard, not taken from a
cache other shards filled, so that a shard's rows are a function of the shard alone.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property, lru_cache
from typing import Any, Callable

import numpy as np

from augkd.errors import ConfigError
from augkd.generators.filters import FilterConfig, label_problem, trajectory_anomaly
from augkd.generators.inflight import BatchConfig
from augkd.generators.label import CachedOutputs, teacher_row_data
from augkd.generators.relax import Capture, RelaxConfig, Trajectory, relax_each
from augkd.generators.relax_batched import RelaxerChoice, choose_relaxer, relax_batched
from augkd.records import LabelledFrame
from augkd.systems.sampler import SampledSystem, SamplerConfig, SystemSampler
from augkd.teachers import DEFAULT_TEACHER, Labels, Teacher, TeacherSpec


SYSTEMS_PER_SHARD = 200


@dataclass(frozen=True)
class FramesConfig:
    fraction: float = 0.1  # probability of keeping each frame
    keep_final: bool = False  # always keep the last frame of a kept trajectory
    # Teacher outputs cached on kept frames (the rows ``augkd label`` writes): feature names and per-atom energies
    # (``outputs``). The batched relaxer takes them from the forward pass that labelled the frame; the ASE relaxer
    # labels the frames subsampling keeps once more.
    features: tuple[str, ...] = ()
    atom_energy: bool = False
    feature_dtype: str = "float16"

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"frames fraction {self.fraction} must be in (0, 1]")
        try:
            object.__setattr__(self, "features", self.outputs.features)
        except ConfigError as error:
            raise ConfigError(f"frames {error}") from None

    @cached_property
    def outputs(self) -> CachedOutputs:
        return CachedOutputs(self.features, self.atom_energy, self.feature_dtype)


@dataclass(frozen=True)
class GenerateConfig:
    """Everything that determines a generated dataset (how it is executed is not part of it)."""

    kind: str = "d1M"
    origin: str = "synthetic"
    seed: int = 0
    systems: int = 100_000
    shards: int | None = None  # None: one shard per SYSTEMS_PER_SHARD systems
    teacher: str = DEFAULT_TEACHER
    teacher_kwargs: dict = field(default_factory=dict, hash=False)
    systems_sampler: SamplerConfig = SamplerConfig()
    # "batched" (FIRE over many systems per teacher call; torch teachers), "ase" (one system at a time, any ASE
    # optimizer) or "auto" (batched where the teacher and optimizer allow it). The batched relaxer's rows depend on
    # which systems share a forward pass (float rounding), hence on ``shards`` and ``batch`` too.
    relaxer: str = "auto"
    relax: RelaxConfig = RelaxConfig()
    batch: BatchConfig = BatchConfig()
    filters: FilterConfig = FilterConfig()
    frames: FramesConfig = FramesConfig()

    def __post_init__(self) -> None:
        if self.systems <= 0:
            raise ConfigError(f"--systems {self.systems} must be > 0")
        if self.shards is None:
            object.__setattr__(self, "shards", -(-self.systems // SYSTEMS_PER_SHARD))
        if not 0 < self.shards <= self.systems:
            raise ConfigError(f"--shards {self.shards} must be between 1 and --systems ({self.systems})")
        _ = self.relaxer_choice  # checks the teacher spec, and refuses what cannot run

    @cached_property
    def teacher_spec(self) -> TeacherSpec:
        return TeacherSpec(self.teacher, self.teacher_kwargs)

    @cached_property
    def relaxer_choice(self) -> RelaxerChoice:
        """The relaxer and optimizer this config runs (a function of relaxer, teacher and relax.optimizer)."""
        return choose_relaxer(self.relaxer, self.teacher_spec, self.relax.optimizer)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "GenerateConfig":
        nested = {
            "systems_sampler": SamplerConfig,
            "relax": RelaxConfig,
            "batch": BatchConfig,
            "filters": FilterConfig,
            "frames": FramesConfig,
        }
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown config key(s) {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key in nested:
                kwargs[key] = _build(nested[key], value, key)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # tuples → lists: the form it takes in JSON files

    def shard_systems(self, shard_index: int) -> range:
        """System indices of one shard: contiguous blocks, sizes differing by at most one."""
        if not 0 <= shard_index < self.shards:
            raise ConfigError(f"shard index {shard_index} is outside 0..{self.shards - 1}")
        return range(shard_index * self.systems // self.shards, (shard_index + 1) * self.systems // self.shards)


def _build(cls: type, values: Any, where: str) -> Any:
    if isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{where}' must be a mapping")
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in config section '{where}'")
    # Lists from yaml/JSON become tuples so that configs stay hashable.
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass
class ShardResult:
    frames: list[LabelledFrame]
    stats: dict[str, Any]  # systems, systems_kept, frames_visited, frames_kept, dropped_systems, dropped_frames


@dataclass
class _Context:
    """What a shard needs beyond its config: the teacher and the sampler (both built once per process)."""

    teacher: Teacher
    sampler: SystemSampler


@lru_cache(maxsize=2)
def _sampler(config: SamplerConfig, allowed_elements: frozenset[str] | None) -> SystemSampler:
    return SystemSampler(config, allowed_elements=allowed_elements)


@lru_cache(maxsize=16)
def _check_seed(sampler: SystemSampler, seed: int) -> None:
    """Draw one system: once per process and master seed, not once per shard."""
    sampler.sample(seed, 0)


def prepare(config: GenerateConfig, device: str | None = "auto") -> _Context:
    """Load the teacher (on ``device``, ``auto``: CUDA when this process sees one) and the sampler for ``config``,
    once per process, and check that a system can be drawn."""
    teacher = config.teacher_spec.load(device)
    wanted = config.frames.outputs.names
    if wanted:
        offered = [name for name in teacher.offered_properties if name not in ("energy", "forces")]
        missing = [name for name in wanted if name not in offered]
        if missing:
            raise ConfigError(
                f"teacher {teacher.identity.name} cannot cache {missing} on frames "
                f"(it offers {sorted(offered) or 'none'})"
            )
    sampler = _sampler(config.systems_sampler, teacher.elements)
    _check_seed(sampler, config.seed)
    return _Context(teacher, sampler)


def system_id(config: GenerateConfig, index: int) -> str:
    return f"{config.kind}-{config.seed}-{index}"


def generate_shard(
    config: GenerateConfig,
    shard_index: int,
    progress: Callable[[int, int], None] | None = None,
    encode: Callable[[np.ndarray, str], Any] | None = None,
    device: str | None = "auto",
) -> ShardResult:
    """Relax the shard's systems and return the kept frames with counts of everything dropped.

    ``progress(systems_done, frames_kept)`` is called after every system. ``encode(array, dtype)`` stores the
    arrays of cached teacher outputs in rows (default: the array itself in that dtype). ``device``: the teacher's
    (see ``prepare``).
    """
    context = prepare(config, device)
    systems = config.shard_systems(shard_index)
    shard = _ShardFrames(config, context.teacher, encode)
    _relax_shard(config, context, systems, shard, progress)
    choice = config.relaxer_choice
    return ShardResult(shard.frames(), {**shard.stats(len(systems)), "relaxer": choice.relaxer,
                                        "optimizer": choice.optimizer})


def _relax_shard(config: GenerateConfig, context: _Context, systems: range, shard: "_ShardFrames", progress) -> None:
    """All of the shard's adslabs, and the clean slabs the filters need, relaxed together in one relaxer run."""
    sampled = [context.sampler.sample(config.seed, index) for index in systems]
    slab_keys: list[str] = []
    if config.filters.needs_relaxed_slab:
        slab_keys = list(dict.fromkeys(system.slab_key for system in sampled))
    slab_atoms = {system.slab_key: system.slab for system in sampled}
    work = [slab_atoms[key] for key in slab_keys] + [system.atoms for system in sampled]
    first = len(slab_keys)
    capture = None
    if config.frames.outputs:
        # The frames subsampling will keep are known before the run (the draws come first, trajectories are
        # prefixes), so outputs are kept for those frames only.
        draws = [_keep_draws(system.seed, config.relax.steps + 1) for system in sampled]

        def wanted(item: int, step: int, last: bool) -> bool:
            return item >= first and (draws[item - first][step] < config.frames.fraction or (last and config.frames.keep_final))

        capture = Capture(config.frames.outputs.names, wanted)
    relaxed_slabs: dict[str, Any] = {}
    waiting: dict[str, list[tuple[SampledSystem, Trajectory]]] = {}

    def finish(system: SampledSystem, trajectory: Trajectory) -> None:
        kept = shard.add(system, trajectory, relaxed_slabs.get(system.slab_key))
        if progress is not None:
            progress(1, kept)

    choice = config.relaxer_choice
    runner = {"batched": relax_batched, "ase": relax_each}[choice.relaxer]  # one contract: (index, trajectory) pairs
    runs = runner(work, context.teacher, replace(config.relax, optimizer=choice.optimizer), config.batch, capture=capture)
    for item, trajectory in runs:
        if item < first:
            key = slab_keys[item]
            slab = None
            if trajectory.failure is None and trajectory.frames:
                slab = slab_atoms[key].copy()
                slab.positions = trajectory.frames[-1].positions
            relaxed_slabs[key] = slab
            for system, parked in waiting.pop(key, []):
                finish(system, parked)
            continue
        system = sampled[item - first]
        if config.filters.needs_relaxed_slab and system.slab_key not in relaxed_slabs:
            waiting.setdefault(system.slab_key, []).append((system, trajectory))
        else:
            finish(system, trajectory)


def _keep_draws(system_seed: int, count: int) -> np.ndarray:
    """Uniform draws deciding which frames are kept; frame k uses draw k whatever the trajectory's length."""
    # A stream of its own, so that changing the sampler's draws never changes which frames are kept.
    return np.random.default_rng([system_seed, 1]).random(count)


class _ShardFrames:
    """The kept frames and drop counts of one shard; systems may arrive in any order, frames leave in index order."""

    def __init__(self, config: GenerateConfig, teacher: Teacher, encode):
        self.config = config
        self.teacher = teacher
        self.encode = encode or (lambda array, dtype: np.asarray(array, dtype=dtype))
        self.by_system: dict[int, list[LabelledFrame]] = {}
        self.dropped_systems: Counter[str] = Counter()
        self.dropped_frames: Counter[str] = Counter()
        self.frames_visited = 0

    def add(self, system: SampledSystem, trajectory: Trajectory, relaxed_slab) -> int:
        """Filter and subsample one system's trajectory; returns the number of frames kept."""
        config = self.config
        self.frames_visited += len(trajectory.frames) + (trajectory.failure == "nonfinite_labels")
        reason = trajectory.failure
        if reason is None and not trajectory.frames:
            reason = "calculator_error"
        if reason is None:
            final = system.atoms.copy()
            final.positions = trajectory.frames[-1].positions
            if config.filters.needs_relaxed_slab and relaxed_slab is None:
                reason = "slab_relaxation_failed"
            if reason is None:
                reason = trajectory_anomaly(system.atoms, final, config.filters, relaxed_slab)
        kept: list[LabelledFrame] = []
        if reason is not None:
            self.dropped_systems[reason] += 1
            self.dropped_frames[reason] += len(trajectory.frames)
            if trajectory.failure == "nonfinite_labels":
                self.dropped_frames["nonfinite_labels"] += 1
        else:
            keep = _keep_draws(system.seed, len(trajectory.frames)) < config.frames.fraction
            if config.frames.keep_final:
                keep[-1] = True
            for frame, wanted in zip(trajectory.frames, keep):
                problem = label_problem(frame.energy, frame.forces, config.filters)
                if problem is not None:
                    self.dropped_frames[problem] += 1
                elif not wanted:
                    self.dropped_frames["subsampled"] += 1
                else:
                    kept.append(self._labelled(system, frame))
        self.by_system[system.index] = kept
        return len(kept)

    def frames(self) -> list[LabelledFrame]:
        return [frame for index in sorted(self.by_system) for frame in self.by_system[index]]

    def stats(self, systems: int) -> dict[str, Any]:
        return {
            "systems": systems,
            "systems_kept": systems - sum(self.dropped_systems.values()),
            "frames_visited": self.frames_visited,
            "frames_kept": sum(len(frames) for frames in self.by_system.values()),
            "dropped_systems": dict(sorted(self.dropped_systems.items())),
            "dropped_frames": dict(sorted(self.dropped_frames.items())),
        }

    def _labelled(self, system: SampledSystem, frame) -> LabelledFrame:
        labelled = _labelled(self.config, self.teacher, system, frame)
        cached = self.config.frames.outputs
        if cached:
            outputs = frame.outputs
            if outputs is None:
                raise RuntimeError(f"frame {frame.step} of system {system.index} was kept but not captured")
            labels = Labels(frame.energy, frame.forces, outputs.get("atom_energy"),
                            {name: outputs[name] for name in cached.features})
            labelled.data.update(teacher_row_data(labels, self.teacher.identity.name, cached, self.encode))
        return labelled


def _labelled(config: GenerateConfig, teacher: Teacher, system: SampledSystem, frame) -> LabelledFrame:
    atoms = system.atoms.copy()
    atoms.positions = frame.positions
    return LabelledFrame(
        atoms=atoms,
        energy=frame.energy,
        forces=frame.forces,
        data={
            "sid": system_id(config, system.index),
            "fid": frame.step,
            "origin": config.origin,
            "teacher": teacher.identity.name,
            "system_seed": system.seed,
            "relax_step": frame.step,
            "bulk": system.bulk,
            "millers": list(system.millers),
            "adsorbate": system.adsorbate,
        },
    )
