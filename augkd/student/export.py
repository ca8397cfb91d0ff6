"""The exported student: one self-contained file, and the reader of every file a student can come from.

``export_student(RUN | CKPT, out)`` writes ``student.pt``, a ``torch.save`` dict that loads with
``torch.load(weights_only=True)`` (no code runs on load)::

    format        "augkd-student"
    version       1
    model         {"name": registry name, "config": settings dict, "direct_forces": bool}
    state_dict    the weights (EMA weights of the run, KD heads stripped), float32
    neighbors     {"cutoff": Å, "max_neighbors": int, "skin": Å (the default Verlet skin for MD)}
    normalizer    the trainer's target statistics (eV/atom, eV, eV/Å) or None; the model's energy_shift/scale
                  buffers already apply them
    element_refs  {"origins": {origin: [119 eV/atom by Z]}, "predict_origin": origin} or None: the model predicts
                  energy − Σ_i c_Z(i) of ``predict_origin``; the calculator adds that sum back
    species       sorted atomic numbers seen in training, or None (unknown)
    provenance    {"teacher", "datasets", "val_metrics", "step" (as the run recorded them), "source": path,
                  "source_sha256", "exported_at" (UTC ISO time), "torch": version}
    torchscript   uint8 tensor: ``torch.jit.save`` of ``Potential(model)`` (float32, CPU), or None for models
                  that build their own graphs (GemNet-OC)

TorchScript, not ``torch.export``: median ms per energy+forces call on the 66-atom Cu(111)+CO slab with the models'
own graphs (cutoff and neighbour limit), one CPU thread, interleaved, TorchScript / torch.export / eager:
PaiNN-small (−∇E) 394 / 431 / 424; SchNet (paper) 312 / 304 / 305; PaiNN 16×2 (−∇E) 9.0 / 11.3 / 10.7; SchNet
tiny 7.8 / 9.2 / 8.3. TorchScript is 7–20 % faster than torch.export except for the paper SchNet (a tie within
3 %). ``torch.export`` also cannot trace ``torch.autograd.grad``, so its forces need eager
autograd outside the exported graph, and its dynamic sizes have lower bounds (no 1-atom or 1-edge structure); a
scripted module computes −∇E inside, takes any size, and runs with torch alone. torch 2.13 marks TorchScript
deprecated (augkd silences that warning): should a later torch drop it, ``Potential`` minus its autograd call is
what to ``torch.export``.

``load_student(path)`` reads an exported student, a model checkpoint (``RUN/checkpoints/best.pt``, ``final.pt``:
``augkd.models.checkpoint``), a trainer state (``last.pt``: its EMA weights) or a run directory (its ``best.pt``,
else ``final.pt``), and refuses weights that are not finite.
"""

from __future__ import annotations

import datetime
import json
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from augkd.errors import AugkdError

FORMAT = "augkd-student"
VERSION = 1
DEFAULT_SKIN = 1.0  # Å: Verlet skin recorded in the export (neighbour lists rebuilt after a 0.5 Å move)
PROVENANCE_KEYS = ("teacher", "datasets", "val_metrics", "step")


@dataclass
class Student:
    """A trained student as read from any of its files (see the module docstring)."""

    path: Path  # the file it was read from
    name: str  # registry name
    config: dict  # settings: ``build_model(name, **config)``
    state_dict: dict[str, torch.Tensor]
    normalizer: dict | None = None
    element_refs: dict | None = None
    species: list[int] | None = None
    provenance: dict | None = None
    skin: float = DEFAULT_SKIN  # Å
    torchscript: bytes | None = None  # a scripted ``Potential`` (exported students only)

    def build_model(self, dtype: torch.dtype = torch.float32):
        """The model with its weights, in eval mode, weights frozen, in ``dtype`` (float32 for inference)."""
        from augkd.models.registry import build_model

        try:
            model = build_model(self.name, **self.config)
        except AugkdError as error:
            raise AugkdError(f"{self.path}: {error}") from None
        model.to(dtype=dtype)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise AugkdError(f"{self.path}: weights do not fit model '{self.name}' ({first})") from None
        return model.eval().requires_grad_(False)

    def element_reference(self):
        """eV per atom by atomic number (NumPy, length 119) to add to the model's energies, or None."""
        import numpy as np

        if not self.element_refs:
            return None
        origin = self.element_refs.get("predict_origin")
        table = self.element_refs.get("origins", {}).get(origin)
        if table is None:
            raise AugkdError(f"{self.path}: element_refs has no table for its predict_origin {origin!r}")
        return np.asarray(table, dtype=np.float64)


def _run_checkpoint(run: Path) -> Path:
    for name in ("best.pt", "final.pt"):
        if (run / "checkpoints" / name).is_file():
            return run / "checkpoints" / name
    raise AugkdError(f"{run} is a directory without checkpoints/best.pt or checkpoints/final.pt (not a training run)")


def _check_finite(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    for key, value in state_dict.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise AugkdError(f"{path}: weight tensor {key} holds NaN or inf values; refusing this student")


def _from_extra(path: Path, name: str, config: dict, state: dict, extra: dict) -> Student:
    provenance = {key: extra[key] for key in PROVENANCE_KEYS if key in extra}
    return Student(
        path=path, name=name, config=dict(config), state_dict=state, normalizer=extra.get("normalizer"),
        element_refs=extra.get("element_refs"), species=extra.get("species"), provenance=provenance,
    )


def _from_trainer_state(path: Path, payload: dict) -> Student:
    """``last.pt``: the full training state; the student is its EMA weights without KD heads."""
    from augkd.kd.heads import strip_kd_heads
    from augkd.models.registry import build_model

    config = json.loads(payload["config"])
    name, overrides = config["model"]["name"], config["model"].get("overrides", {})
    model_config = build_model(name, **overrides).config  # the full settings, as save_model records them
    extra = {**(payload.get("provenance") or {}), "step": payload.get("step"), "normalizer": payload.get("normalizer"),
             "element_refs": payload.get("element_refs")}
    return _from_extra(path, name, model_config, strip_kd_heads(payload["ema"]), extra)


def load_student(path: str | Path) -> Student:
    """The student in ``path`` (exported file, model checkpoint, trainer state, or run directory)."""
    path = Path(path)
    if path.is_dir():
        path = _run_checkpoint(path)
    if not path.is_file():
        raise AugkdError(f"no student file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        raise AugkdError(f"{path} is not an augkd student or checkpoint ({type(error).__name__})") from None
    if not isinstance(payload, dict):
        raise AugkdError(f"{path} is not an augkd student or checkpoint")
    kind = payload.get("format")
    if kind == FORMAT:
        if payload.get("version") != VERSION:
            raise AugkdError(f"{path}: augkd student version {payload.get('version')} (this augkd reads {VERSION})")
        scripted = payload.get("torchscript")
        student = Student(
            path=path, name=payload["model"]["name"], config=payload["model"]["config"],
            state_dict=payload["state_dict"], normalizer=payload.get("normalizer"),
            element_refs=payload.get("element_refs"), species=payload.get("species"),
            provenance=payload.get("provenance"), skin=float(payload["neighbors"].get("skin", DEFAULT_SKIN)),
            torchscript=None if scripted is None else scripted.numpy().tobytes(),
        )
    elif kind == "augkd-model":
        from augkd.models.checkpoint import VERSION as MODEL_VERSION

        if payload.get("version") != MODEL_VERSION:
            raise AugkdError(f"{path}: augkd model checkpoint version {payload.get('version')} "
                             f"(this augkd reads {MODEL_VERSION})")
        student = _from_extra(path, payload["name"], payload["config"], payload["state_dict"], payload["extra"] or {})
    elif {"ema", "student", "config"} <= set(payload):
        student = _from_trainer_state(path, payload)
    else:
        raise AugkdError(f"{path} is not an augkd student or checkpoint")
    _check_finite(path, student.state_dict)
    return student


def probe_structure(species: list[int] | None):
    """A small periodic test structure (8 atoms, a rattled fcc cell) of the student's first species (else Cu)."""
    import numpy as np
    from ase.build import bulk

    z = species[0] if species else 29
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.set_atomic_numbers(np.full(len(atoms), z))
    atoms.rattle(0.05, seed=0)
    return atoms


def script_potential(model, species: list[int] | None = None) -> bytes:
    """``torch.jit.save`` of ``Potential(model)``, after checking that it computes what the model computes."""
    from augkd.models.data import atoms_to_batch
    from augkd.models.potential import load_scripted, save_scripted, script
    from augkd.student.neighbors import VerletList

    data = save_scripted(script(model))
    atoms = probe_structure(species)
    edges = VerletList(model.settings.cutoff, 0.0, model.settings.max_neighbors).edges(atoms)
    dtype = next(model.parameters()).dtype
    _, forces = load_scripted(data)(
        torch.as_tensor(atoms.numbers, dtype=torch.long), torch.as_tensor(atoms.positions, dtype=dtype),
        torch.as_tensor(edges.edge_index), torch.as_tensor(edges.shifts, dtype=dtype),
    )
    reference = model(atoms_to_batch([atoms], dtype=dtype)).forces.detach()
    error = float((forces - reference).abs().max())
    if not error < 1e-3:
        raise AugkdError(f"the scripted {model.name} differs from the model by {error:.3g} eV/Å on a probe structure")
    return data


def export_student(source: str | Path, out: str | Path, script: bool = True) -> Path:
    """Write ``out`` (see the module docstring) from a run directory, checkpoint, trainer state or exported file."""
    from augkd.hashing import sha256_file

    student = load_student(source)
    model = student.build_model(torch.float32)
    scripted = script_potential(model, student.species) if script and model.edge_list else None
    provenance = {
        **(student.provenance or {}),
        "source": str(student.path),
        "source_sha256": sha256_file(student.path),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": str(torch.__version__),
    }
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"name": student.name, "config": model.config, "direct_forces": bool(model.direct_forces)},
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "neighbors": {
            "cutoff": float(model.settings.cutoff),
            "max_neighbors": int(model.settings.max_neighbors),
            "skin": float(student.skin),
        },
        "normalizer": student.normalizer,
        "element_refs": student.element_refs,
        "species": None if student.species is None else sorted(int(z) for z in student.species),
        "provenance": provenance,
        "torchscript": None if scripted is None else torch.frombuffer(bytearray(scripted), dtype=torch.uint8),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
        os.replace(temp, out)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return out
