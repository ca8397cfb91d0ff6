"""Per-element reference energies, one set per data source (origin): fit, apply, remove, save, load.

Energies from different sources sit on different references (VASP totals against its PAW references, GPAW
energies relative to isolated-atom setups, OC20 adsorption energies, CHGNet's MP-compatible totals): the same
structure differs by a per-element offset Σ_Z n_Z·c_Z. As fairchem's linear references do, the offsets of one source
are fitted by least squares on its training rows,

    E_i ≈ Σ_Z n_iZ · c_Z        (n_iZ: atoms of element Z in row i; c_Z in eV/atom),

over the elements present in that source only (columns that are all zero are left out, which keeps the system
well posed); ``numpy.linalg.lstsq`` gives the minimum-norm solution when compositions are collinear (reported as
``rank`` < number of elements). A student then trains on referenced energies E − Σ n_Z c_{origin,Z} (``apply``),
and a prediction for a chosen origin adds that origin's references back (``remove``).

Elements absent from a source get c = 0 for it and are listed (``ReferenceFit.absent``): a prediction on such an
element in that origin's scale is then off by its unknown offset.

Arrays are indexed by atomic number: 119 floats, index 0 unused (always 0). Units: eV and eV/atom.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from augkd.errors import ConfigError

N_REFS = 119  # atomic numbers 0..118
FILE_FORMAT = "augkd-element-refs"
FILE_VERSION = 1


def composition_matrix(numbers: Sequence[Sequence[int] | np.ndarray]) -> np.ndarray:
    """(rows, 119) float64 counts n_iZ of every element Z in every row."""
    matrix = np.zeros((len(numbers), N_REFS), dtype=np.float64)
    for row, z in enumerate(numbers):
        z = np.asarray(z, dtype=np.int64)
        if z.size and (z.min() < 1 or z.max() >= N_REFS):
            raise ConfigError(f"row {row}: atomic numbers must lie in 1..{N_REFS - 1}, got {z.min()}..{z.max()}")
        matrix[row] = np.bincount(z, minlength=N_REFS)
    return matrix


@dataclass(frozen=True, eq=False)
class ReferenceFit:
    """The fitted references of one source and how well the linear model describes its energies."""

    refs: np.ndarray  # (119,) eV/atom; 0 for elements not fitted
    elements: tuple[int, ...]  # atomic numbers present in the rows (fitted)
    absent: tuple[int, ...] = ()  # atomic numbers of other sources missing here (their refs are 0)
    rows: int = 0
    rank: int = 0  # rank of the composition matrix over the present elements (< len(elements): collinear)
    residual_mean: float = 0.0  # eV, mean of E − Σ n c over the rows
    residual_std: float = 0.0  # eV
    mae: float = 0.0  # eV
    rmse: float = 0.0  # eV
    r2: float = float("nan")

    @property
    def zero_mean(self) -> bool:
        """Whether the referenced energies are centred: |mean| within 1e-6 eV, or within 1 % of their spread."""
        return abs(self.residual_mean) <= max(1e-6, 0.01 * self.residual_std)

    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows, "elements": list(self.elements), "absent": list(self.absent), "rank": self.rank,
                "residual_mean": self.residual_mean, "residual_std": self.residual_std, "mae": self.mae,
                "rmse": self.rmse, "r2": self.r2}


def fit_element_references(numbers: Sequence[Sequence[int] | np.ndarray], energies: Sequence[float],
                           absent_from: Iterable[int] = ()) -> ReferenceFit:
    """Least-squares per-element references of one source's rows (``numbers[i]``: atomic numbers of row i,
    ``energies[i]``: its energy in eV). ``absent_from``: elements of the other sources, listed when missing here."""
    energy = np.asarray(energies, dtype=np.float64)
    if energy.ndim != 1 or len(energy) != len(numbers):
        raise ConfigError(f"{len(numbers)} compositions but {energy.size} energies")
    if len(energy) == 0:
        raise ConfigError("no rows to fit element references on")
    if not np.isfinite(energy).all():
        raise ConfigError("non-finite energies among the rows to fit element references on")
    counts = composition_matrix(numbers)
    present = counts.sum(axis=0) > 0
    reduced = counts[:, present]
    solution, _, rank, _ = np.linalg.lstsq(reduced, energy, rcond=None)
    refs = np.zeros(N_REFS, dtype=np.float64)
    refs[present] = solution
    residual = energy - reduced @ solution
    spread = float(((energy - energy.mean()) ** 2).sum())
    elements = tuple(int(z) for z in np.flatnonzero(present))
    return ReferenceFit(
        refs=refs,
        elements=elements,
        absent=tuple(sorted(set(int(z) for z in absent_from) - set(elements))),
        rows=len(energy),
        rank=int(rank),
        residual_mean=float(residual.mean()),
        residual_std=float(residual.std()),
        mae=float(np.abs(residual).mean()),
        rmse=float(math.sqrt((residual ** 2).mean())),
        r2=float(1.0 - (residual ** 2).sum() / spread) if spread > 0 else float("nan"),
    )


def fit_frames(frames: Iterable[Any], absent_from: Iterable[int] = ()) -> ReferenceFit:
    """``fit_element_references`` over ``LabelledFrame``-like rows (``.atoms.numbers``, ``.energy``)."""
    numbers, energies = [], []
    for frame in frames:
        numbers.append(np.asarray(frame.atoms.numbers))
        energies.append(float(frame.energy))
    return fit_element_references(numbers, energies, absent_from)


def reference_energies(refs: np.ndarray, numbers: Sequence[Sequence[int] | np.ndarray]) -> np.ndarray:
    """Σ_Z n_iZ · c_Z for every row (eV)."""
    refs = _checked(refs)
    return np.array([float(refs[np.asarray(z, dtype=np.int64)].sum()) for z in numbers], dtype=np.float64)


def apply_references(energies: Sequence[float], numbers: Sequence[Sequence[int] | np.ndarray],
                     refs: np.ndarray) -> np.ndarray:
    """Referenced energies E − Σ n_Z c_Z (what a student trains on), eV."""
    return np.asarray(energies, dtype=np.float64) - reference_energies(refs, numbers)


def remove_references(referenced: Sequence[float], numbers: Sequence[Sequence[int] | np.ndarray],
                      refs: np.ndarray) -> np.ndarray:
    """Energies on the source's own scale again: E_ref + Σ n_Z c_Z (a prediction in that origin's scale), eV."""
    return np.asarray(referenced, dtype=np.float64) + reference_energies(refs, numbers)


def batch_reference_energies(refs: Any, atomic_numbers: Any, batch: Any, num_graphs: int) -> Any:
    """Torch: Σ n_Z c_Z per structure of a batch (``atomic_numbers`` (N,), ``batch`` (N,) structure index per atom,
    as in fairchem's ``AtomicData``). ``refs``: one (119,) set for every structure, or (num_graphs, 119) — each
    structure its own origin's set, e.g. ``table[origin_index]``. Returns (num_graphs,) in refs' dtype."""
    import torch

    refs = torch.as_tensor(refs).to(atomic_numbers.device)
    z, graph = atomic_numbers.long(), batch.long()
    per_atom = refs[z] if refs.dim() == 1 else refs[graph, z]
    return torch.zeros(num_graphs, dtype=per_atom.dtype, device=per_atom.device).index_add(0, graph, per_atom)


def _checked(refs: Any, where: str = "element references") -> np.ndarray:
    array = np.asarray(refs, dtype=np.float64)
    if array.shape != (N_REFS,):
        raise ConfigError(f"{where}: expected {N_REFS} values indexed by atomic number, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ConfigError(f"{where}: non-finite values")
    if array[0] != 0.0:
        raise ConfigError(f"{where}: index 0 (no element) must be 0, got {array[0]}")
    return array


@dataclass(frozen=True, eq=False)
class ElementReferences:
    """References of every training origin, and the origin whose scale predictions use.

    ``origins[o]``: (119,) float64, eV/atom indexed by Z. A student trained on rows of origin o learns
    E − Σ n·origins[o]; it predicts ``model + Σ n·origins[predict_origin]``.
    """

    origins: Mapping[str, np.ndarray]
    predict_origin: str
    fits: Mapping[str, ReferenceFit] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.origins:
            raise ConfigError("element references need at least one origin")
        checked = {str(o): _checked(r, f"element references of origin {o!r}") for o, r in self.origins.items()}
        object.__setattr__(self, "origins", checked)
        if self.predict_origin not in checked:
            raise ConfigError(f"predict origin {self.predict_origin!r} has no element references "
                              f"(origins: {', '.join(sorted(checked))})")

    def refs(self, origin: str) -> np.ndarray:
        if origin not in self.origins:
            raise ConfigError(f"origin {origin!r} has no element references (origins: {', '.join(sorted(self.origins))})")
        return self.origins[origin]

    def energy(self, origin: str, numbers: Sequence[int] | np.ndarray) -> float:
        """Σ n_Z c_Z of one structure in ``origin``'s scale (eV)."""
        return float(reference_energies(self.refs(origin), [numbers])[0])

    def predicted(self, referenced: float, numbers: Sequence[int] | np.ndarray, origin: str | None = None) -> float:
        """A student's referenced energy → ``origin``'s scale (default: ``predict_origin``), eV."""
        return float(referenced) + self.energy(origin or self.predict_origin, numbers)

    def to_extra(self) -> dict[str, Any]:
        """For a checkpoint's ``extra["element_refs"]``: plain lists, JSON- and torch.save-safe."""
        return {"origins": {o: [float(x) for x in r] for o, r in sorted(self.origins.items())},
                "predict_origin": self.predict_origin}

    @classmethod
    def from_extra(cls, value: Mapping[str, Any]) -> "ElementReferences":
        if not isinstance(value, Mapping) or "origins" not in value or "predict_origin" not in value:
            raise ConfigError("element references must be {'origins': {origin: [119 floats]}, 'predict_origin': o}")
        return cls({str(o): np.asarray(r, dtype=np.float64) for o, r in value["origins"].items()},
                   str(value["predict_origin"]))


def fit_origin_references(rows: Mapping[str, tuple[Sequence[Sequence[int] | np.ndarray], Sequence[float]]],
                          predict_origin: str) -> ElementReferences:
    """Fit every origin's references on its own rows (``rows[origin] = (numbers, energies)``); each fit lists the
    elements other origins have and it lacks (``ElementReferences.fits[origin].absent``)."""
    everywhere = sorted({int(z) for numbers, _ in rows.values() for zs in numbers for z in np.asarray(zs).ravel()})
    fits = {origin: fit_element_references(numbers, energies, everywhere)
            for origin, (numbers, energies) in rows.items()}
    return ElementReferences({o: f.refs for o, f in fits.items()}, predict_origin, fits)


def save_references(path: str | Path, references: ElementReferences) -> Path:
    """A JSON file (``data.element_refs: <file>``): references, predict origin and, when fitted, the fit reports."""
    path = Path(path)
    document = {"format": FILE_FORMAT, "version": FILE_VERSION, **references.to_extra(),
                "fits": {o: f.summary() for o, f in sorted(references.fits.items())}}
    path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    return path


def load_references(path: str | Path) -> ElementReferences:
    """Read a file written by ``save_references``; a one-line ``ConfigError`` for anything else."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"element references {path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"element references {path}: unreadable ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FILE_FORMAT:
        raise ConfigError(f"element references {path}: not an {FILE_FORMAT} file")
    if document.get("version") != FILE_VERSION:
        raise ConfigError(f"element references {path}: version {document.get('version')!r}, expected {FILE_VERSION}")
    try:
        return ElementReferences.from_extra(document)
    except ConfigError as exc:
        raise ConfigError(f"element references {path}: {exc}") from None


def evenly_spaced(start: int, stop: int, most: int) -> range:
    """At most ``most`` indices spread evenly over start..stop-1 (a large source is fitted on a sample)."""
    return range(start, stop, max(1, (stop - start) // most))


def fit_source_references(dataset: Any, origins: Sequence[str], predict_origin: str,
                          max_rows: int = 10000) -> ElementReferences:
    """Every source's references fitted on its own (finite-energy) training rows; ``dataset`` stacks the sources in
    the order of ``origins`` (``source_sizes``, ``frame(i)``), as the trainer's ``FrameDataset`` does."""
    rows: dict[str, tuple[list, list]] = {}
    start = 0
    for origin, size in zip(origins, dataset.source_sizes):
        numbers, energies = rows.setdefault(origin, ([], []))
        for index in evenly_spaced(start, start + size, max_rows):
            frame = dataset.frame(index)
            if math.isfinite(frame.energy):
                numbers.append(np.asarray(frame.atoms.numbers))
                energies.append(float(frame.energy))
        if not energies:
            raise ConfigError(f"source {origin!r} has no row with a finite energy to fit element references on")
        start += size
    return fit_origin_references(rows, predict_origin)


def fitted_teacher_references(numbers: Sequence[np.ndarray], energies: Sequence[float]) -> np.ndarray:
    """The teacher's own references (119 values by Z), fitted on its energies of training structures."""
    return fit_element_references(numbers, energies).refs


def describe_references(references: ElementReferences) -> str:
    """One line per origin: how well a linear model in the element counts describes its energies."""
    from ase.data import chemical_symbols

    lines = []
    for origin, fit in sorted(references.fits.items()):
        absent = " ".join(chemical_symbols[z] for z in fit.absent)
        lines.append(f"element references of origin {origin!r}: fitted on {fit.rows} rows "
                     f"({' '.join(chemical_symbols[z] for z in fit.elements)}), residual MAE {fit.mae:.3f} eV"
                     + (f"; not in this origin, reference 0: {absent}" if absent else ""))
    return "\n".join(lines)


def reference_output(output: Any, batch: Any, refs: np.ndarray, sign: float = -1.0) -> Any:
    """A model's or teacher's output (``ModelOutput``) for ``batch`` with Σ n_Z c_Z added (``sign`` +1) or
    taken away (−1) from its energies and c_Z from its per-atom energies."""
    import torch

    per_atom = torch.as_tensor(refs, device=batch.atomic_numbers.device)[batch.atomic_numbers.long()]
    shift = batch_reference_energies(refs, batch.atomic_numbers, batch.batch, len(output.energy))
    changes = {"energy": output.energy + sign * shift.to(output.energy)}
    if output.atom_energy is not None:
        changes["atom_energy"] = output.atom_energy + sign * per_atom.to(output.atom_energy)
    return dataclasses.replace(output, **changes)
