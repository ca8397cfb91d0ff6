"""SLURM job arrays: one array task per shard, each running ``augkd <job> ... --shard-index $SLURM_ARRAY_TASK_ID``.

The dataset directory is the only state that matters: a shard is done when it is in ``shards/`` with a matching
sidecar, whatever SLURM says. SLURM's bookkeeping lives next to it in ``DIR/slurm/``:

    slurm/submit.json            the template text and the values it was rendered with (resubmit reuses them)
    slurm/jobs.json              one entry per submitted array: job id, --array spec, script, time
    slurm/array-<n>.sbatch       every rendered script, exactly as submitted
    slurm/logs/<job>_<task>.out  task output

``plan.json`` is written at submit time, so every task checks itself against the same plan.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from augkd.errors import AugkdError, ConfigError
from augkd.io.dataset import write_json_atomic

from augkd.distributed.jobs import ShardJob
from augkd.distributed.local import open_dataset
from augkd.distributed.merge import index_ranges, load_plan, missing_shards

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "slurm" / "array.sbatch"
REQUIRED_PLACEHOLDERS = ("array", "augkd", "args")
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"}


class SlurmError(AugkdError):
    """SLURM refused or could not be asked."""


@dataclass(frozen=True)
class ArrayOptions:
    """How the array is run (not what it makes): flags of ``augkd slurm submit``, defaults in slurm.yaml."""

    parallel: int = 64  # tasks running at once at most
    time: str = "04:00:00"  # wall time per task
    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    mem: str | None = None  # e.g. "16G"
    augkd: str | None = None  # command that runs augkd in a task; None: this interpreter, `-m augkd.cli`
    template: str | None = None  # sbatch template file; None: slurm/array.sbatch

    def __post_init__(self) -> None:
        if self.parallel <= 0:
            raise ConfigError(f"--parallel {self.parallel} must be > 0")
        if self.gpus_per_task < 0:
            raise ConfigError(f"--gpus-per-task {self.gpus_per_task} must be >= 0")
        if self.cpus_per_task <= 0:
            raise ConfigError(f"--cpus-per-task {self.cpus_per_task} must be > 0")


@dataclass
class Submission:
    job_id: str | None  # None for a dry run
    array: str
    script: str  # the rendered script's text
    script_path: str | None


# -- templates ---------------------------------------------------------------------------------------------------
def load_template(path: str | Path | None) -> str:
    """The template's text, refused in one line when it lacks a required placeholder."""
    path = Path(path) if path else DEFAULT_TEMPLATE
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"--template {path}: {exc.strerror or exc}") from None
    found = set(_PLACEHOLDER.findall(text))
    lacking = [name for name in REQUIRED_PLACEHOLDERS if name not in found]
    if lacking:
        listed = ", ".join("{{" + name + "}}" for name in lacking)
        raise ConfigError(f"--template {path} lacks required placeholder(s) {listed}")
    return text


def render(template: str, values: dict[str, str]) -> str:
    """Replace every ``{{name}}``; a name without a value is an error (a typo would otherwise reach sbatch)."""
    unknown = sorted(set(_PLACEHOLDER.findall(template)) - set(values))
    if unknown:
        raise ConfigError(f"template has unknown placeholder(s) {unknown}; known: {sorted(values)}")
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def _template_values(out: Path, command: str, task_argv: list[str], options: ArrayOptions) -> dict[str, str]:
    """Everything but ``array``: fixed at submit time and reused by resubmit."""
    directives = []
    if options.partition:
        directives.append(f"#SBATCH --partition={options.partition}")
    if options.gpus_per_task:
        directives.append(f"#SBATCH --gpus-per-task={options.gpus_per_task}")
    if options.mem:
        directives.append(f"#SBATCH --mem={options.mem}")
    # A task must see the same configs and caches as the submitter, whatever the cluster's --export policy.
    environment = [f"export {name}={shlex.quote(value)}" for name, value in sorted(os.environ.items())
                   if name in ("AUGKD_SLAB_CACHE", "AUGKD_CONFIG_DIR")]
    augkd = options.augkd or f"{shlex.quote(sys.executable)} -m augkd.cli"
    return {
        "out": str(out),
        "job_name": f"augkd-{command}-{out.name}",
        "time": options.time,
        "cpus_per_task": str(options.cpus_per_task),
        "log_dir": str(out / "slurm" / "logs"),
        "workdir": str(Path.cwd()),
        "resource_directives": "\n".join(directives),
        "environment": "\n".join(environment),
        "augkd": augkd,
        "args": shlex.join(task_argv),
    }


# -- sbatch / squeue / sacct -------------------------------------------------------------------------------------
def _sbatch(script_path: Path) -> str:
    """Submit; returns the job id. Any refusal → one line with sbatch's own message."""
    if shutil.which("sbatch") is None:
        raise SlurmError("sbatch not found: run this on a SLURM login node (or start one: scripts/slurm-dev.sh start)")
    done = subprocess.run(["sbatch", "--parsable", str(script_path)], capture_output=True, text=True)
    if done.returncode != 0:
        message = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        raise SlurmError(f"sbatch rejected {script_path}: {message}")
    return done.stdout.strip().split(";")[0]  # "<id>" or "<id>;<cluster>"


def _slurm_task_states(job_ids: list[str]) -> dict[tuple[str, int], str]:
    """(job id, array task) → state, from squeue (live tasks) and sacct (finished ones) where they answer."""
    states: dict[tuple[str, int], str] = {}
    if not job_ids:
        return states
    joined = ",".join(job_ids)
    commands = [
        ["sacct", "-n", "-P", "-X", "-j", joined, "-o", "JobID,State"],  # first, so that squeue's live view wins
        ["squeue", "-h", "-r", "-t", "all", "-j", joined, "-o", "%i|%T"],
    ]
    for command in commands:
        if shutil.which(command[0]) is None:
            continue
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            continue
        if done.returncode != 0:  # e.g. sacct without accounting storage, or jobs squeue has forgotten
            continue
        for line in done.stdout.splitlines():
            job, _, state = line.strip().partition("|")
            match = re.fullmatch(r"(\d+)_(\d+)", job)
            if match and state:
                states[(match.group(1), int(match.group(2)))] = state.split()[0]
    return states


# -- the three commands ------------------------------------------------------------------------------------------
def _slurm_dir(out: Path) -> Path:
    return out / "slurm"


def _submit(out: Path, template: str, values: dict[str, str], shards: list[int], parallel: int,
            dry_run: bool) -> Submission:
    array = f"{index_ranges(shards)}%{parallel}"
    script = render(template, {**values, "array": array})
    if dry_run:
        return Submission(None, array, script, None)
    folder = _slurm_dir(out)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    jobs_file = folder / "jobs.json"
    jobs = json.loads(jobs_file.read_text()) if jobs_file.is_file() else []
    script_path = folder / f"array-{len(jobs)}.sbatch"
    script_path.write_text(script)
    job_id = _sbatch(script_path)
    jobs.append({
        "job_id": job_id, "array": array, "shards": shards, "script": str(script_path.relative_to(out)),
        "submitted": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })
    write_json_atomic(jobs_file, jobs)
    return Submission(job_id, array, script, str(script_path))


def submit_array(job: ShardJob, out: str | Path, task_argv: list[str], options: ArrayOptions,
                 dry_run: bool = False) -> Submission:
    """Write the plan, render the template and submit one array over the shards not yet complete.

    ``task_argv`` is the job's ``augkd`` command line (subcommand first) without the executable, ``--shard-index``
    and execution flags; it must contain ``--out`` with the absolute path of ``out``.
    """
    out = Path(out).resolve()
    template = load_template(options.template)
    values = _template_values(out, job.command, task_argv, options)
    if dry_run:  # writes nothing: shows the array over every shard
        return _submit(out, template, values, list(range(job.shard_count)), options.parallel, dry_run=True)
    _, _, missing = open_dataset(job, out)  # refuses a foreign dir or another plan; writes plan.json
    if not missing:
        raise SlurmError(f"{out}: every shard is already complete; `augkd merge {out}` finishes the dataset")
    folder = _slurm_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "submit.json", {
        "template": template, "values": values, "options": asdict(options),
    })
    return _submit(out, template, values, missing, options.parallel, dry_run=False)


def _load_submit(out: Path) -> dict[str, Any]:
    record = _slurm_dir(out) / "submit.json"
    if not record.is_file():
        raise SlurmError(f"{out} was not submitted with `augkd slurm submit` (no slurm/submit.json)")
    return json.loads(record.read_text())


def _recorded_jobs(out: Path) -> list[dict[str, Any]]:
    jobs_file = _slurm_dir(out) / "jobs.json"
    return json.loads(jobs_file.read_text()) if jobs_file.is_file() else []


def shard_status(out: str | Path) -> dict[str, Any]:
    """Per shard: ``complete`` (from the directory, checksum verified) or ``missing``, with SLURM's last word."""
    out = Path(out).resolve()
    plan = load_plan(out)
    missing = set(missing_shards(out))
    jobs = _recorded_jobs(out)
    states = _slurm_task_states([job["job_id"] for job in jobs])
    shards = []
    for index in range(plan["shard_count"]):
        slurm_state = None
        for job in jobs:  # the latest submission that covers this shard speaks last
            if index in job["shards"]:
                slurm_state = states.get((job["job_id"], index), "UNKNOWN")
        shards.append({
            "index": index, "state": "missing" if index in missing else "complete", "slurm": slurm_state,
        })
    return {
        "out": str(out),
        "shard_count": plan["shard_count"],
        "complete": plan["shard_count"] - len(missing),
        "missing": sorted(missing),
        "merged": (out / "manifest.json").is_file(),
        "jobs": [job["job_id"] for job in jobs],
        "shards": shards,
    }


def resubmit(out: str | Path, parallel: int | None = None, dry_run: bool = False) -> Submission:
    """Submit one array over the shards that are missing and not queued or running: ``--array=1,3%P``."""
    out = Path(out).resolve()
    submitted = _load_submit(out)
    status = shard_status(out)
    active = {s["index"] for s in status["shards"] if s["slurm"] in _ACTIVE_STATES}
    todo = [i for i in status["missing"] if i not in active]
    if not todo:
        if status["missing"]:
            raise SlurmError(
                f"{out}: shards {index_ranges(status['missing'])} are still queued or running; nothing to resubmit"
            )
        raise SlurmError(f"{out}: every shard is complete; `augkd merge {out}` finishes the dataset")
    parallel = parallel if parallel is not None else submitted["options"]["parallel"]
    if parallel <= 0:
        raise ConfigError(f"--parallel {parallel} must be > 0")
    return _submit(out, submitted["template"], submitted["values"], todo, parallel, dry_run)
