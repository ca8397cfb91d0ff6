"""Shard jobs: what every executor runs. A job is a pure function of (its config, shard index) → rows.

``generate`` relaxes systems; ``label`` and ``jitter`` transform the rows of an existing dataset, one output shard per
input shard. Every executor (in-process, local processes, Dask, SLURM array tasks) takes a job and only deals with
where shards run; writing, skipping complete shards, plans and manifests are the executors' shared code.

A job is pickled to worker processes, so it holds only configs, paths and the device name; what is expensive to
build (the teacher) is built once per process (``TeacherSpec.load``). The device (``auto``: CUDA when the
process sees one) is resolved where the shard runs, so a worker pinned to one GPU uses that GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from augkd.errors import ConfigError
from augkd.generators.d1m import GenerateConfig, ShardResult, generate_shard, prepare
from augkd.generators.jitter import EXECUTION_FIELDS, JitterConfig, jitter_frames
from augkd.generators.jitter import prepare as prepare_jitter
from augkd.generators.label import LabelConfig, check_teacher_offers, label_frames
from augkd.io.arrays import encode_array
from augkd.io.aselmdb import read_aselmdb
from augkd.io.dataset import checked_shard, load_manifest
from augkd.teachers import TorchTeacher, resolve_device

# progress(units_done, rows_kept): units are the job's own (systems for generate, input rows otherwise)
Progress = Callable[[int, int], None]


def planning_device(device: str) -> str:
    """Where the process writing the plan loads the teacher (for its identity only): the job's device when this
    process has it, else the CPU (a submit host without GPUs planning work for GPU workers)."""
    try:
        return resolve_device(device)
    except ConfigError:
        return "cpu"


class ShardJob:
    """The interface executors rely on; subclasses fill it in."""

    command: str  # the `augkd` subcommand that runs one shard of this job (SLURM array tasks)
    unit: str  # what progress counts
    device: str = "auto"  # where the teacher runs, resolved where a shard runs; how the job runs, never in the plan

    @property
    def shard_count(self) -> int:
        raise NotImplementedError

    def plan(self) -> dict[str, Any]:
        """What the dataset is: written first, compared on resume. May load the teacher (for its identity)."""
        raise NotImplementedError

    def units(self, index: int) -> int:
        raise NotImplementedError

    def run_shard(self, index: int, progress: Progress | None = None) -> ShardResult:
        raise NotImplementedError

    def check_output(self, out: str | Path) -> None:
        """Refuse an output directory that cannot be right for this job, before anything is written."""

    def summary(self, manifest: dict[str, Any], out: str | Path) -> str:
        return f"wrote {manifest['totals']['rows']} rows to {out} ({len(manifest['shards'])} shards)"


@dataclass(frozen=True)
class GenerateJob(ShardJob):
    config: GenerateConfig
    device: str = "auto"
    command = "generate"
    unit = "system"

    @property
    def shard_count(self) -> int:
        return self.config.shards

    def plan(self) -> dict[str, Any]:
        config = self.config
        return {
            "kind": config.kind,
            "origin": config.origin,
            "seed": config.seed,
            "systems": config.systems,
            "shard_count": config.shards,
            "teacher": prepare(config, planning_device(self.device)).teacher.identity.to_dict(),
            "config": config.to_dict(),
        }

    def units(self, index: int) -> int:
        return len(self.config.shard_systems(index))

    def run_shard(self, index: int, progress: Progress | None = None) -> ShardResult:
        return generate_shard(self.config, index, progress, encode=encode_array, device=self.device)

    def summary(self, manifest: dict[str, Any], out: str | Path) -> str:
        totals = manifest["totals"]
        return (f"wrote {totals['rows']} rows from {totals.get('systems_kept', 0)}/{self.config.systems} systems "
                f"to {out} ({len(manifest['shards'])} shards)")


@dataclass(frozen=True)
class SourceJob(ShardJob):
    """A job whose shard i is made from shard i of an existing dataset (``source``)."""

    source: Path
    unit = "row"
    _manifest: dict = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Path(self.source).resolve())
        object.__setattr__(self, "_manifest", load_manifest(self.source))

    @property
    def shard_count(self) -> int:
        return len(self._manifest["shards"])

    def units(self, index: int) -> int:
        return int(self._manifest["shards"][index]["rows"])

    def check_output(self, out: str | Path) -> None:
        if Path(out).resolve() == self.source:
            raise ConfigError(f"--out {out} must differ from the input dataset")

    def source_plan(self) -> dict[str, Any]:
        """The part of the plan that pins the input: its shards' checksums and what it was made from."""
        manifest = self._manifest
        return {
            "kind": manifest.get("kind"),
            "source": str(self.source),
            "source_shards": [shard["sha256"] for shard in manifest["shards"]],
            "shard_count": self.shard_count,
            "teacher": manifest.get("teacher"),
            "config": manifest.get("config"),
        }

    def source_frames(self, index: int) -> list:
        # only this task's input shard is checked: a SLURM array task must not hash every shard of the input
        return list(read_aselmdb(checked_shard(self.source, self._manifest["shards"][index])))


@dataclass(frozen=True)
class LabelJob(SourceJob):
    config: LabelConfig = None
    device: str = "auto"
    command = "label"

    def teacher(self):
        return self._teacher(resolve_device(self.device))

    def _teacher(self, device: str):
        teacher = self.config.teacher_spec.load(device)
        check_teacher_offers(teacher, self.config.outputs)
        return teacher

    def plan(self) -> dict[str, Any]:
        config = self.config
        return {
            **self.source_plan(),
            "origin": self._manifest.get("origin"),
            "labelled_by": self._teacher(planning_device(self.device)).identity.to_dict(),
            "label_config": {"features": list(config.features), "atom_energy": config.atom_energy,
                             "feature_dtype": config.feature_dtype},
        }

    def run_shard(self, index: int, progress: Progress | None = None) -> ShardResult:
        count = (lambda done: progress(done, done)) if progress else None
        frames = label_frames(self.source_frames(index), self.teacher(), self.config.outputs, encode_array, count)
        return ShardResult(frames, {"labelled_rows": len(frames)})


@dataclass(frozen=True)
class JitterJob(SourceJob):
    config: JitterConfig = None
    command = "jitter"

    def plan(self) -> dict[str, Any]:
        from augkd.hashing import sha256_file

        config = self.config
        teacher = prepare_jitter(replace(config, device=planning_device(config.device))).teacher
        return {
            **self.source_plan(),
            "origin": config.mode,
            "teacher": teacher.identity.to_dict(),  # the rows' labels are this teacher's
            "teacher_differentiable": isinstance(teacher, TorchTeacher) and teacher.differentiable,
            "source_teacher": self._manifest.get("teacher"),
            "student": {"path": config.student, "sha256": sha256_file(config.student)} if config.student else None,
            "jitter": {k: v for k, v in config.to_dict().items() if k not in EXECUTION_FIELDS},
        }

    @property
    def device(self) -> str:
        return self.config.device

    def run_shard(self, index: int, progress: Progress | None = None) -> ShardResult:
        config = self.config
        context = prepare_jitter(config)
        count = (lambda rows: progress(rows, rows * config.copies)) if progress else None
        frames, stats = jitter_frames(
            self.source_frames(index), config, context.teacher, context.student, encode_array, count
        )
        stats.pop("teacher_differentiable", None)  # a property of the teacher: in the plan, not summed per shard
        return ShardResult(frames, stats)


@dataclass(frozen=True)
class ImportJob(ShardJob):
    """``augkd import``: the user's files as a dataset. Shard i reads the file pieces ``layout`` gave it (no teacher).

    The layout (``augkd.io.importers.plan_import``: files found, hashed, indexed and cut) is made once, before the
    job, and travels with it to workers; its dict is the dataset's plan.
    """

    layout: Any  # augkd.io.importers.ImportPlan
    device: str = "cpu"  # nothing runs on a device
    command = "import"
    unit = "frame"

    @property
    def shard_count(self) -> int:
        return self.layout.shard_count

    def plan(self) -> dict[str, Any]:
        return self.layout.to_dict()

    def units(self, index: int) -> int:
        return self.layout.units(index)

    def run_shard(self, index: int, progress: Progress | None = None) -> ShardResult:
        from augkd.io.importers import import_shard

        frames, stats = import_shard(self.layout, index, progress)
        return ShardResult(frames, stats)

    def check_output(self, out: str | Path) -> None:
        self.layout.check_output(out)

    def summary(self, manifest: dict[str, Any], out: str | Path) -> str:
        totals = manifest["totals"]
        dropped = totals.get("dropped_frames") or {}
        text = (f"imported {totals['rows']} rows from {len(manifest['sources'])} files to {out} "
                f"({len(manifest['shards'])} shards)")
        if dropped:
            text += "; dropped " + ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(dropped.items()))
        return text
