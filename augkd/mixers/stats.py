"""What an epoch of mixed training was made of: draws and mean (unweighted) losses per origin."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


class OriginStats:
    """Sums of per-origin losses over the batches seen since the last ``reset`` (micro-averages, not batch means).

    ``add(origin, energy_sum, systems, force_sum, free_atoms)`` per batch and origin: the sum of the origin's
    per-system energy losses and of its per-free-atom force losses. Saved in checkpoints, so an epoch interrupted
    and resumed reports the same means as an uninterrupted one.
    """

    def __init__(self, origins: Sequence[str]):
        self.origins = list(origins)
        self.reset()

    def reset(self) -> None:
        self._sums = {origin: [0.0, 0, 0.0, 0] for origin in self.origins}

    def add(self, origin: str, energy_sum: float, systems: int, force_sum: float, free_atoms: int) -> None:
        sums = self._sums.setdefault(origin, [0.0, 0, 0.0, 0])
        sums[0] += float(energy_sum)
        sums[1] += int(systems)
        sums[2] += float(force_sum)
        sums[3] += int(free_atoms)

    def means(self) -> dict[str, tuple[float, float]]:
        """origin → (mean energy loss per system, mean force loss per free atom); nan where none was seen."""
        return {
            origin: (e / n if n else math.nan, f / m if m else math.nan)
            for origin, (e, n, f, m) in self._sums.items()
        }

    def state_dict(self) -> dict[str, list]:
        return {origin: list(sums) for origin, sums in self._sums.items()}

    def load_state_dict(self, state: Mapping[str, list]) -> None:
        self.reset()
        for origin, sums in state.items():
            self._sums[origin] = [float(sums[0]), int(sums[1]), float(sums[2]), int(sums[3])]


def epoch_row(
    epoch: int, step: int, complete: bool, counts: Sequence[int], origins: Sequence[str],
    targets: Sequence[float], stats: OriginStats,
) -> dict[str, float | int | str]:
    """One line of ``epochs.csv``: the realised share α of each origin next to its target, and its mean losses."""
    draws = int(sum(counts))
    means = stats.means()
    row: dict[str, float | int | str] = {"epoch": epoch, "step": step, "complete": int(complete), "draws": draws}
    for origin, count, target in zip(origins, counts, targets):
        energy, force = means.get(origin, (math.nan, math.nan))
        row[f"alpha_target_{origin}"] = round(float(target), 6)
        row[f"alpha_{origin}"] = round(count / draws, 6) if draws else ""
        row[f"draws_{origin}"] = int(count)
        row[f"loss_energy_{origin}"] = "" if math.isnan(energy) else energy
        row[f"loss_forces_{origin}"] = "" if math.isnan(force) else force
    return row
