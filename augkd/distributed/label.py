"""``augkd label``: add cached teacher outputs to an existing dataset, shard by shard (resumable)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from augkd.errors import ConfigError
from augkd.generators.label import LabelConfig, check_teacher_offers, label_frames
from augkd.io.arrays import encode_array
from augkd.io.dataset import DatasetWriter, load_manifest, read_frames, shard_paths
from augkd.teachers import load_teacher


def run_label(source: str | Path, out: str | Path, config: LabelConfig, progress: bool = True) -> dict[str, Any]:
    """Write ``out``: the shards of ``source`` with the teacher's outputs added to every row; returns the manifest."""
    source, out = Path(source), Path(out)
    if source.resolve() == out.resolve():
        raise ConfigError(f"--out {out} must differ from the input dataset")
    manifest = load_manifest(source)
    DatasetWriter(out, plan=None).check()
    teacher = load_teacher(config.teacher, config.teacher_kwargs)
    check_teacher_offers(teacher, config)
    shards = shard_paths(source)
    plan = {
        "kind": manifest.get("kind"),
        "origin": manifest.get("origin"),
        "source": str(source.resolve()),
        "source_shards": [s["sha256"] for s in manifest["shards"]],
        "shard_count": len(shards),
        "labelled_by": teacher.identity.to_dict(),
        "label_config": {"features": list(config.features), "atom_energy": config.atom_energy,
                         "feature_dtype": config.feature_dtype},
        "teacher": manifest.get("teacher"),
        "config": manifest.get("config"),
    }
    writer = DatasetWriter(out, plan)
    writer.open()
    from tqdm import tqdm

    with tqdm(total=manifest["totals"]["rows"], unit="row", desc="labelling", disable=not progress, file=sys.stderr) as bar:
        for index, shard in enumerate(shards):
            done = writer.complete_shard(index)
            if done is not None:
                bar.update(done.rows)
                continue
            frames = label_frames(read_frames(shard), teacher, config, encode_array, bar.update)
            writer.write_shard(index, frames, {"labelled_rows": len(frames)})
    return writer.finalize(len(shards), {"totals_source": manifest.get("totals")})
