"""Training data: rows of augkd datasets as fairchem ``AtomicData`` batches, with cached teacher outputs beside them."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from augkd._fairchem import quiet_fairchem
from augkd.errors import ConfigError
from augkd.io.aselmdb import AselmdbReader
from augkd.io.arrays import decode_array, is_encoded_array
from augkd.io.dataset import shard_paths
from augkd.records import LabelledFrame
from augkd.element_refs import ElementReferences


@dataclass
class Sample:
    data: Any  # AtomicData of one frame (energy and forces are the row's own labels)
    origin: str
    sid: str
    teacher: dict[str, Any] | None  # cached teacher outputs, as tensors, when the row has them


@dataclass
class TrainBatch:
    batch: Any  # AtomicData batch
    origins: list[str]
    sids: list[str]
    #: cached teacher outputs for the rows that have them: energy (B,), forces (N,3), atom_energy (N,),
    #: features {name: (N, ...)}; ``teacher_rows`` (B,) bool marks rows with them, ``teacher_atoms`` (N,) the atoms
    teacher: dict[str, Any] | None = None
    teacher_rows: torch.Tensor | None = None
    teacher_atoms: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device) -> "TrainBatch":
        """This batch with every tensor on ``device`` (in place; a no-op on CPU)."""
        if device.type == "cpu":
            return self
        self.batch = self.batch.to(device)
        if self.teacher is not None:
            self.teacher = {
                k: ({n: t.to(device) for n, t in v.items()} if isinstance(v, dict) else v.to(device))
                for k, v in self.teacher.items()
            }
            self.teacher_rows = self.teacher_rows.to(device)
            self.teacher_atoms = self.teacher_atoms.to(device)
        return self


class FrameDataset(torch.utils.data.Dataset):
    """All rows of one or more augkd dataset directories (or shard files), indexed 0..len-1.

    ``origin`` overrides the rows' own ``origin``. ``from_sources`` stacks several sources, each with its origin,
    one after another (the numbering ``augkd.mixers.MixtureSampler`` draws from); ``source_sizes`` are their rows.

    Energies are referenced when ``references`` is set: a sample's energy is E − Σ n_Z c_{origin,Z} (the row's origin,
    or the references' ``predict_origin`` for an origin they do not know), and cached teacher energies are
    E_T − Σ n_Z t_Z with the teacher's own references ``teacher_refs`` (119 values by Z; per-atom energies − t_Z).
    ``frame`` always gives the row as stored.
    """

    references: ElementReferences | None = None
    teacher_refs: np.ndarray | None = None

    def __init__(self, paths: Sequence[str | Path], origin: str | None = None):
        self._open([(paths, origin)])

    @classmethod
    def from_sources(cls, sources: Sequence[tuple[Sequence[str | Path], str | None]]) -> "FrameDataset":
        dataset = cls.__new__(cls)
        dataset._open(sources)
        return dataset

    def _open(self, sources: Sequence[tuple[Sequence[str | Path], str | None]]) -> None:
        self.readers, self._reader_origins, self.source_sizes = [], [], []
        for paths, origin in sources:
            readers = [AselmdbReader(shard) for path in paths for shard in shard_paths(path)]
            self.readers += readers
            self._reader_origins += [origin] * len(readers)
            self.source_sizes.append(sum(len(r) for r in readers))
        self._ends = np.cumsum([len(r) for r in self.readers]).tolist()
        if not self._ends or self._ends[-1] == 0:
            raise ConfigError(f"dataset {', '.join(str(p) for paths, _ in sources for p in paths)} has no rows")
        quiet_fairchem()

    def __len__(self) -> int:
        return self._ends[-1]

    def _locate(self, index: int) -> tuple[int, int]:
        shard = bisect.bisect_right(self._ends, index)
        return shard, index - (self._ends[shard - 1] if shard else 0)

    def frame(self, index: int) -> LabelledFrame:
        shard, row = self._locate(index)
        return self.readers[shard][row]

    def origin(self, index: int, frame: LabelledFrame | None = None) -> str:
        """The origin of row ``index`` (its source's, else the row's own)."""
        shard, _ = self._locate(index)
        frame = frame if frame is not None else self.frame(index)
        return self._reader_origins[shard] or str(frame.data.get("origin", "unknown"))

    def reference_origin(self, origin: str) -> str:
        """Whose element references reference rows of ``origin``: its own, else the prediction origin."""
        return origin if origin in self.references.origins else self.references.predict_origin

    def referenced_energy(self, index: int, frame: LabelledFrame | None = None) -> float:
        """Row ``index``'s energy as samples give it (eV): referenced when the dataset has references."""
        frame = frame if frame is not None else self.frame(index)
        if self.references is None:
            return float(frame.energy)
        origin = self.reference_origin(self.origin(index, frame))
        return float(frame.energy) - self.references.energy(origin, frame.atoms.numbers)

    def __getitem__(self, index: int) -> Sample:
        from ase.calculators.singlepoint import SinglePointCalculator
        from fairchem.core.datasets.atomic_data import AtomicData

        frame = self.frame(index)
        atoms = frame.atoms
        energy = self.referenced_energy(index, frame)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=frame.forces)
        data = AtomicData.from_ase(atoms, r_energy=True, r_forces=True, r_stress=False, sid=str(frame.data.get("sid")))
        teacher = cached_teacher_outputs(frame.data)
        if teacher is not None and self.teacher_refs is not None:
            per_atom = torch.from_numpy(self.teacher_refs[atoms.numbers].astype(np.float32))
            teacher["energy"] = teacher["energy"] - per_atom.sum()
            if "atom_energy" in teacher:
                teacher["atom_energy"] = teacher["atom_energy"] - per_atom
        return Sample(data=data, origin=self.origin(index, frame), sid=str(frame.data.get("sid", index)), teacher=teacher)


def cached_teacher_outputs(data: dict[str, Any]) -> dict[str, Any] | None:
    """The teacher outputs ``augkd label`` stored in a row, as float32 tensors; None if the row has none."""
    if "teacher_energy" not in data:
        return None

    def tensor(value):
        array = decode_array(value) if is_encoded_array(value) else np.asarray(value)
        return torch.from_numpy(np.array(array, dtype=np.float32))

    out: dict[str, Any] = {"energy": torch.tensor(float(data["teacher_energy"])), "forces": tensor(data["teacher_forces"])}
    if "teacher_atom_energy" in data:
        out["atom_energy"] = tensor(data["teacher_atom_energy"])
    out["features"] = {name: tensor(value) for name, value in data.get("teacher_features", {}).items()}
    return out


def iter_batches(dataset: FrameDataset, batch_size: int, device: torch.device | None = None):
    """Consecutive batches over the whole dataset, in order (evaluation, analysis)."""
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        yield batch.to(device) if device is not None else batch


def collate(samples: list[Sample]) -> TrainBatch:
    from fairchem.core.datasets.atomic_data import atomicdata_list_to_batch

    batch = atomicdata_list_to_batch([s.data for s in samples])
    natoms = [int(s.data.natoms) for s in samples]
    has = [s.teacher is not None for s in samples]
    teacher = rows = atoms = None
    if any(has):
        chosen = [s.teacher for s in samples if s.teacher is not None]
        keys = set(chosen[0]["features"])
        if any(set(t["features"]) != keys for t in chosen) or any(("atom_energy" in t) != ("atom_energy" in chosen[0]) for t in chosen):
            raise ConfigError("rows in one batch carry different cached teacher outputs; label all sources alike")
        teacher = {
            "energy": torch.stack([t["energy"] for t in chosen]),
            "forces": torch.cat([t["forces"] for t in chosen]),
            "features": {k: torch.cat([t["features"][k] for t in chosen]) for k in sorted(keys)},
        }
        if "atom_energy" in chosen[0]:
            teacher["atom_energy"] = torch.cat([t["atom_energy"] for t in chosen])
        rows = torch.tensor(has)
        atoms = torch.repeat_interleave(rows, torch.tensor(natoms))
    return TrainBatch(
        batch=batch,
        origins=[s.origin for s in samples],
        sids=[s.sid for s in samples],
        teacher=teacher,
        teacher_rows=rows,
        teacher_atoms=atoms,
    )
