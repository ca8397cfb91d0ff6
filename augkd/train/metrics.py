"""OC20 S2EF metrics (shared spec, algorithms.md "Metrics"), micro-averaged over a whole set.

Inputs are in eV and eV/Å; reported energy MAE is in meV, force MAE in meV/Å, EFwT in %.
- energy_mae: mean over systems of |Ê − E|
- force_mae: mean over free atoms × xyz of |F̂ − F|
- force_cos: mean over free atoms of cos(F̂_i, F_i)
- efwt: % of systems with |Ê − E| < 0.02 eV and max over free atoms and components |F̂ − F| < 0.03 eV/Å
  (a system without free atoms passes the force test)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

EFWT_ENERGY_THRESHOLD = 0.02  # eV
EFWT_FORCE_THRESHOLD = 0.03  # eV/Å

#: metric name → (column label, short label for its gap-closed column, higher is better)
METRICS = {
    "energy_mae": ("E MAE meV", "E", False),
    "force_mae": ("F MAE meV/Å", "F", False),
    "force_cos": ("F cos", "cos", True),
    "efwt": ("EFwT %", "EFwT", True),
}


def _free(free: torch.Tensor | None, n: int, device) -> torch.Tensor:
    return torch.ones(n, dtype=torch.bool, device=device) if free is None else free.bool()


def energy_mae(energy_pred: torch.Tensor, energy_true: torch.Tensor) -> float:
    """meV, mean over systems."""
    return float((energy_pred - energy_true).abs().double().mean()) * 1000.0


def force_mae(forces_pred: torch.Tensor, forces_true: torch.Tensor, free: torch.Tensor | None = None) -> float:
    """meV/Å, mean over free atoms × xyz."""
    mask = _free(free, forces_pred.shape[0], forces_pred.device)
    return float((forces_pred - forces_true)[mask].abs().double().mean()) * 1000.0


def force_cos(forces_pred: torch.Tensor, forces_true: torch.Tensor, free: torch.Tensor | None = None) -> float:
    """Mean over free atoms of the cosine between predicted and true forces."""
    mask = _free(free, forces_pred.shape[0], forces_pred.device)
    return float(torch.cosine_similarity(forces_pred[mask].double(), forces_true[mask].double(), dim=-1).mean())


def efwt_success(
    energy_pred: torch.Tensor,
    energy_true: torch.Tensor,
    forces_pred: torch.Tensor,
    forces_true: torch.Tensor,
    batch: torch.Tensor,
    free: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) bool: the system is within both EFwT thresholds."""
    num_systems = energy_pred.shape[0]
    mask = _free(free, forces_pred.shape[0], forces_pred.device)
    err = (forces_pred - forces_true).abs().amax(dim=-1).double()
    err = torch.where(mask, err, torch.zeros_like(err))
    max_err = err.new_zeros(num_systems).scatter_reduce(0, batch.long(), err, reduce="amax", include_self=True)
    e_ok = (energy_pred - energy_true).abs() < EFWT_ENERGY_THRESHOLD
    return e_ok & (max_err < EFWT_FORCE_THRESHOLD)


def efwt(energy_pred, energy_true, forces_pred, forces_true, batch, free=None) -> float:
    """% of systems within both thresholds."""
    return float(efwt_success(energy_pred, energy_true, forces_pred, forces_true, batch, free).double().mean()) * 100


class MetricAccumulator:
    """Sums over batches; ``compute()`` gives micro-averages over everything seen (no average of batch averages)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._e_abs = 0.0
        self._systems = 0
        self._f_abs = 0.0
        self._f_components = 0
        self._cos = 0.0
        self._free_atoms = 0
        self._efwt = 0

    @torch.no_grad()
    def update(
        self,
        energy_pred: torch.Tensor,
        energy_true: torch.Tensor,
        forces_pred: torch.Tensor,
        forces_true: torch.Tensor,
        batch: torch.Tensor,
        free: torch.Tensor | None = None,
    ) -> None:
        """One batch: energies (B,) eV, forces (N, 3) eV/Å, ``batch`` (N,) system index, ``free`` (N,) bool."""
        energy_pred, energy_true = energy_pred.detach().double(), energy_true.detach().double()
        forces_pred, forces_true = forces_pred.detach().double(), forces_true.detach().double()
        mask = _free(free, forces_pred.shape[0], forces_pred.device)
        self._e_abs += float((energy_pred - energy_true).abs().sum())
        self._systems += int(energy_pred.shape[0])
        df = (forces_pred - forces_true)[mask]
        self._f_abs += float(df.abs().sum())
        self._f_components += int(df.numel())
        self._cos += float(torch.cosine_similarity(forces_pred[mask], forces_true[mask], dim=-1).sum())
        self._free_atoms += int(mask.sum())
        self._efwt += int(efwt_success(energy_pred, energy_true, forces_pred, forces_true, batch, mask).sum())

    def update_output(self, output, data) -> None:
        """From a ``ModelOutput`` and a fairchem ``AtomicData`` batch with ``energy``/``forces`` labels."""
        fixed = getattr(data, "fixed", None)
        self.update(output.energy, data.energy, output.forces, data.forces, data.batch,
                    None if fixed is None else fixed == 0)

    def compute(self) -> dict[str, float]:
        nan = float("nan")
        return {
            "energy_mae": self._e_abs / self._systems * 1000.0 if self._systems else nan,
            "force_mae": self._f_abs / self._f_components * 1000.0 if self._f_components else nan,
            "force_cos": self._cos / self._free_atoms if self._free_atoms else nan,
            "efwt": self._efwt / self._systems * 100.0 if self._systems else nan,
            "n_systems": self._systems,
            "n_free_atoms": self._free_atoms,
        }

    def state(self) -> dict:
        """Raw sums (to all-reduce across ranks, then ``merge``)."""
        return dict(vars(self))

    def merge(self, other: MetricAccumulator | Mapping) -> None:
        state = other.state() if isinstance(other, MetricAccumulator) else other
        for key, value in state.items():
            setattr(self, key, getattr(self, key) + value)


def gap_closed(metric_student: float, metric_kd: float, metric_teacher: float, higher_is_better: bool = False) -> float:
    """% of the student→teacher gap the KD student closed: (s − kd)/(s − t)·100 (nan when s == t).

    The ratio is the same for lower- and higher-is-better metrics (both numerator and denominator flip sign);
    ``higher_is_better`` is accepted for clarity at call sites.
    """
    if higher_is_better:
        num, den = metric_kd - metric_student, metric_teacher - metric_student
    else:
        num, den = metric_student - metric_kd, metric_student - metric_teacher
    if den == 0 or not math.isfinite(den):
        return float("nan")
    return num / den * 100.0


def compare_table(rows: Mapping[str, Mapping[str, float]], student: str, teacher: str) -> str:
    """Paper-style text table: one row per run, the metrics, and gap-closed % (E, F, …) for the other rows."""
    for name in (student, teacher):
        if name not in rows:
            raise KeyError(f"no row {name!r} in the table (rows: {list(rows)})")
    metrics = [m for m in METRICS if all(m in r for r in rows.values())]
    header = ["run"] + [METRICS[m][0] for m in metrics] + [f"gap {METRICS[m][1]} %" for m in metrics]
    table = [header]
    for name, row in rows.items():
        cells = [name + (" (student)" if name == student else " (teacher)" if name == teacher else "")]
        cells += [_fmt(row[m], m) for m in metrics]
        for m in metrics:
            if name in (student, teacher):
                cells.append("")
            else:
                g = gap_closed(rows[student][m], row[m], rows[teacher][m], METRICS[m][2])
                cells.append("–" if math.isnan(g) else f"{g:.1f}")  # no gap to close
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: float, metric: str) -> str:
    if metric == "force_cos":
        return f"{value:.4f}"
    return f"{value:.2f}" if metric == "efwt" else f"{value:.1f}"
