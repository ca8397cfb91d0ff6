"""``augkd import``: the user's own DFT data as an augkd dataset.

Inputs (``discover``): extxyz/xyz, ASE ``.traj`` and ``.db``, VASP ``OUTCAR`` and ``vasprun.xml`` (every ionic step),
GPAW text logs, fairchem ``.aselmdb`` files and folders, and OC20 S2EF pairs (``N.extxyz[.xz]`` + ``N.txt[.xz]``);
text files may be xz/gz/bz2-compressed (read as streams). The output is an ordinary augkd dataset written by the
same shard writer as ``generate`` (``augkd.io.dataset``: tmp → hard link → sidecar checksum → manifest), run as a
shard job (``augkd.distributed.jobs.ImportJob``) by the same executors, so it resumes the same way.

- ``plan``: files found, hashed and indexed, work cut into shards before anything is written.
- ``readers`` / ``extxyz``: the frames of one piece of a file with their ids.
- ``rows``: a frame → a row, or a drop counted by reason.

Public entries: ``ImportConfig``, ``plan_import``, ``import_shard`` (what one shard writes), ``import_dataset``
(everything, as the command does it).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

from augkd.errors import AugkdError
from augkd.io.importers.discover import FORMATS, ImportFileError
from augkd.io.importers.plan import ENERGIES, FRAMES_PER_SHARD, ImportConfig, ImportPlan, Piece, plan_import
from augkd.io.importers.readers import SourceFrame, read_oc20_txt, span_frames, whole_file_frames
from augkd.io.importers.rows import DROP_REASONS, RowRules, Tally, to_row
from augkd.records import LabelledFrame

__all__ = [
    "DROP_REASONS", "ENERGIES", "FORMATS", "FRAMES_PER_SHARD", "ImportConfig", "ImportFileError", "ImportPlan",
    "import_dataset", "import_shard", "plan_import",
]

_PROGRESS_EVERY = 64  # frames between progress reports of a cut file


def piece_frames(plan: ImportPlan, piece: Piece) -> Iterator[SourceFrame]:
    """The source frames of one piece (ids given, --index applied)."""
    source = plan.sources[piece.file]
    path = plan.path(piece.file)
    if piece.chosen is None:
        return whole_file_frames(path, source.path, source.format, source.frames, plan.config.selector)
    oc20 = None
    if source.companion is not None:
        oc20 = read_oc20_txt(Path(plan.root) / source.companion, source.companion, source.frames)
    return span_frames(path, source.path, piece.chosen, piece.offset, piece.run, piece.in_run, oc20)


def import_shard(plan: ImportPlan, index: int,
                 progress: Callable[[int, int], None] | None = None) -> tuple[list[LabelledFrame], dict[str, Any]]:
    """The rows of shard ``index`` and its counts (frames read, kept, dropped by reason, rows per source file).

    ``progress(units, rows)`` is called as frames go by; the units of a piece add up to its weight.
    """
    config = plan.config
    rules = RowRules(config.origin, config.energy, config.strict)
    tally = Tally()
    rows: list[LabelledFrame] = []
    for piece in plan.shards[index]:
        source = plan.sources[piece.file]
        unlabelled_before = tally.dropped["no_energy"] + tally.dropped["no_forces"]
        seen = reported = kept = 0
        for item in piece_frames(plan, piece):
            row = to_row(item, source.path, rules, tally)
            seen += 1
            if row is not None:
                rows.append(row)
                kept += 1
            if progress is not None and piece.chosen is not None and seen % _PROGRESS_EVERY == 0:
                progress(seen - reported, kept)
                reported, kept = seen, 0
        unlabelled = tally.dropped["no_energy"] + tally.dropped["no_forces"] - unlabelled_before
        if seen and unlabelled == seen and piece.chosen is None:
            raise ImportFileError(f"{source.path}: no frame carries energy and forces (read as {source.format}); "
                                  "nothing to train on")
        if progress is not None:
            progress(piece.weight - reported, kept)
    return rows, tally.stats()


def import_dataset(config: ImportConfig, out: str | Path, workers: int = 1, progress: bool = True,
                   resume: bool = False) -> tuple[dict[str, Any], Any]:
    """Plan, then write every shard and the manifest into ``out``; returns (manifest, job).

    Nothing is left behind when the input turns out bad: an ``--out`` this call created is removed again. An
    interrupted run (a kill, a crash) leaves its complete shards; rerunning the same command finishes the rest.
    """
    from augkd.distributed.executors import ExecutionRequest, execute
    from augkd.distributed.jobs import ImportJob
    from augkd.io.dataset import DatasetWriter

    out = Path(out)
    DatasetWriter(out, plan=None).check()  # a foreign --out is refused before the inputs are read
    plan = plan_import(config)
    plan.check_output(out)
    existed = out.exists()
    fresh = not existed or not any(out.iterdir())
    job = ImportJob(plan)
    try:
        done = execute(job, out, ExecutionRequest(executor="local", workers=workers, resume=resume,
                                                  progress=progress))
    except AugkdError:
        if fresh:
            _remove_written(out, keep_folder=existed)
        raise
    return done["manifest"], job


def _remove_written(out: Path, keep_folder: bool) -> None:
    if not keep_folder:
        shutil.rmtree(out, ignore_errors=True)
        return
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
