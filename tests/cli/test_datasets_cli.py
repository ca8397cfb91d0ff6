"""`augkd info` of a labelled dataset shows who labelled it and what it caches."""

from __future__ import annotations

import json

from augkd.cli import main
from mixers.mixer_helpers import emt_dataset


def test_info_shows_labeller_and_cached_outputs(tmp_path, capsys):
    data = emt_dataset(tmp_path / "dft", rows=4, origin="dft")
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "painn-tiny", "--steps", "1", "--out", str(run),
                 "--quiet"]) == 0
    ckpt = run / "checkpoints" / "final.pt"
    labelled = tmp_path / "labelled"
    assert main(["label", str(data), "--teacher", f"ckpt:{ckpt}", "--features", "atom_energy,node",
                 "--out", str(labelled), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["info", str(labelled), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["labelled_by"].startswith("ckpt:") or "painn-tiny" in info["labelled_by"]
    assert info["cached_outputs"]["node"] == "float16 (32,)"
    assert info["cached_outputs"]["atom_energy"] == "float32 ()"
    assert main(["info", str(labelled)]) == 0
    text = capsys.readouterr().out
    assert "labelled by" in text and "node (float16 (32,))" in text
