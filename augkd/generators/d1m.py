"""The d1M generator: sampled systems → teacher relaxations → filtered, subsampled, labelled frames.

``generate_shard(config, shard_index)`` is a pure function of its arguments (the teacher and sampler it needs are
built once per process and reused), so any executor can run any shard anywhere.
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from augkd.errors import ConfigError
from augkd.generators.filters import FilterConfig, label_problem, trajectory_anomaly
from augkd.generators.relax import RelaxConfig, relax
from augkd.records import LabelledFrame
from augkd.systems.sampler import SampledSystem, SamplerConfig, SystemSampler
from augkd.teachers import DEFAULT_TEACHER, Teacher, load_teacher


SYSTEMS_PER_SHARD = 200


@dataclass(frozen=True)
class FramesConfig:
    fraction: float = 0.1  # probability of keeping each frame
    keep_final: bool = False  # always keep the last frame of a kept trajectory

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"frames fraction {self.fraction} must be in (0, 1]")


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
    relax: RelaxConfig = RelaxConfig()
    filters: FilterConfig = FilterConfig()
    frames: FramesConfig = FramesConfig()

    def __post_init__(self) -> None:
        if self.systems <= 0:
            raise ConfigError(f"--systems {self.systems} must be > 0")
        if self.shards is None:
            object.__setattr__(self, "shards", -(-self.systems // SYSTEMS_PER_SHARD))
        if not 0 < self.shards <= self.systems:
            raise ConfigError(f"--shards {self.shards} must be between 1 and --systems ({self.systems})")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "GenerateConfig":
        nested = {
            "systems_sampler": SamplerConfig,
            "relax": RelaxConfig,
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


class _Context:
    """What one process builds once and reuses for every shard: the teacher, the sampler, relaxed clean slabs."""

    def __init__(self, teacher: Teacher, sampler: SystemSampler):
        self.teacher = teacher
        self.sampler = sampler
        self.relaxed_slabs: OrderedDict[str, Any] = OrderedDict()
        self.checked_seeds: set[int] = set()  # master seeds for which a system was drawn successfully

    def relaxed_slab(self, system: SampledSystem, config: RelaxConfig):
        """The clean slab relaxed by the same teacher (cached per slab); None if its relaxation failed."""
        if system.slab_key not in self.relaxed_slabs:
            trajectory = relax(system.slab, self.teacher.calculator(), config)
            slab = None
            if trajectory.failure is None and trajectory.frames:
                slab = system.slab.copy()
                slab.positions = trajectory.frames[-1].positions
            self.relaxed_slabs[system.slab_key] = slab
            if len(self.relaxed_slabs) > 1024:
                self.relaxed_slabs.popitem(last=False)
        return self.relaxed_slabs[system.slab_key]


@lru_cache(maxsize=2)
def _context(teacher: str, teacher_kwargs_json: str, sampler_config: SamplerConfig) -> _Context:
    loaded = load_teacher(teacher, json.loads(teacher_kwargs_json))
    return _Context(loaded, SystemSampler(sampler_config, allowed_elements=loaded.elements))


def prepare(config: GenerateConfig) -> _Context:
    """Load the teacher and the sampler for ``config`` (once per process) and check that a system can be drawn."""
    context = _context(config.teacher, json.dumps(config.teacher_kwargs, sort_keys=True), config.systems_sampler)
    if config.seed not in context.checked_seeds:  # once per process, not once per shard
        context.sampler.sample(config.seed, 0)
        context.checked_seeds.add(config.seed)
    return context


def system_id(config: GenerateConfig, index: int) -> str:
    return f"{config.kind}-{config.seed}-{index}"


def generate_shard(
    config: GenerateConfig, shard_index: int, progress: Callable[[int, int], None] | None = None
) -> ShardResult:
    """Relax the shard's systems and return the kept frames with counts of everything dropped.

    ``progress(systems_done, frames_kept)`` is called after every system.
    """
    context = prepare(config)
    teacher = context.teacher
    calculator = teacher.calculator()
    frames_out: list[LabelledFrame] = []
    dropped_systems: Counter[str] = Counter()
    dropped_frames: Counter[str] = Counter()
    frames_visited = 0
    systems = config.shard_systems(shard_index)
    for index in systems:
        kept_before = len(frames_out)
        system = context.sampler.sample(config.seed, index)
        trajectory = relax(system.atoms, calculator, config.relax)
        frames_visited += len(trajectory.frames) + (trajectory.failure == "nonfinite_labels")
        reason = trajectory.failure
        if reason is None and not trajectory.frames:
            reason = "calculator_error"
        if reason is None:
            final = system.atoms.copy()
            final.positions = trajectory.frames[-1].positions
            relaxed_slab = None
            if config.filters.needs_relaxed_slab:
                relaxed_slab = context.relaxed_slab(system, config.relax)
                if relaxed_slab is None:
                    reason = "slab_relaxation_failed"
            if reason is None:
                reason = trajectory_anomaly(system.atoms, final, config.filters, relaxed_slab)
        if reason is not None:
            dropped_systems[reason] += 1
            dropped_frames[reason] += len(trajectory.frames)
            if trajectory.failure == "nonfinite_labels":
                dropped_frames["nonfinite_labels"] += 1
        else:
            # A stream of its own, so that changing the sampler's draws never changes which frames are kept.
            keep = np.random.default_rng([system.seed, 1]).random(len(trajectory.frames)) < config.frames.fraction
            if config.frames.keep_final:
                keep[-1] = True
            for frame, wanted in zip(trajectory.frames, keep):
                problem = label_problem(frame.energy, frame.forces, config.filters)
                if problem is not None:
                    dropped_frames[problem] += 1
                elif not wanted:
                    dropped_frames["subsampled"] += 1
                else:
                    frames_out.append(_labelled(config, teacher, system, frame))
        if progress is not None:
            progress(1, len(frames_out) - kept_before)
    stats = {
        "systems": len(systems),
        "systems_kept": len(systems) - sum(dropped_systems.values()),
        "frames_visited": frames_visited,
        "frames_kept": len(frames_out),
        "dropped_systems": dict(sorted(dropped_systems.items())),
        "dropped_frames": dict(sorted(dropped_frames.items())),
    }
    return ShardResult(frames_out, stats)


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
