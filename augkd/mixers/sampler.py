"""``MixtureSampler``: the training order over N sources with target shares α_k (shared spec, algorithms.md "Mixer").

The sources' rows are numbered one after another (source 0 first), and every draw of an epoch picks row i of
source k with probability α_k/n_k: first the source, with probability α_k, then a row of that source. With
``replacement=False`` (the default) a source's draws walk through fresh random permutations of its rows, so no row
repeats before all of them have come once; with ``replacement=True`` they are i.i.d. Either way each draw is marginally
α_k/n_k, so a row of source k is expected L·α_k/n_k times per epoch of L draws (paper: 2M DFT + 1M synthetic,
α = 0.5, L = 3M → 0.75 and 1.5 passes).

An epoch's draws are a pure function of (seed, epoch) and the mixture, the same on every rank; rank r of W takes
draws r, r+W, r+2W, … of the epoch cut to a multiple of W, so the ranks' shares are disjoint and interleave back
into the one-process order. ``(epoch, position)`` is the whole state: resume continues the same sequence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from augkd.errors import ConfigError

#: |Σ α_k − 1| allowed (shares typed as decimals)
ALPHA_SUM_TOLERANCE = 1e-6


def check_alphas(alphas: Sequence[float], names: Sequence[str] | None = None) -> None:
    """Each α_k a finite number in [0, 1] and Σ α_k = 1, else a ``ConfigError`` naming the bad value."""
    names = list(names) if names is not None else [f"source {k}" for k in range(len(alphas))]
    for name, alpha in zip(names, alphas):
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
            raise ConfigError(f"alpha {alpha!r} of {name} must be in [0, 1]")
    total = float(sum(alphas))
    if abs(total - 1.0) > ALPHA_SUM_TOLERANCE:
        shares = ", ".join(f"{name} {alpha:g}" for name, alpha in zip(names, alphas))
        raise ConfigError(f"source alphas must sum to 1, got {total:g} ({shares})")


class MixtureSampler:
    """Batches of global row indices (source k's rows are ``offsets[k] .. offsets[k] + sizes[k] - 1``).

    ``epoch_length``: draws per epoch over all ranks together (default Σ n_k). A batch never spans two epochs (an
    epoch's last batch may be short), and every rank gets ⌊L/W⌋ draws, so all ranks change epoch at the same step.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        alphas: Sequence[float],
        batch_size: int,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        epoch_length: int | None = None,
        replacement: bool = False,
    ):
        if not sizes or len(sizes) != len(alphas):
            raise ConfigError(f"a mixture needs one alpha per source (sizes {list(sizes)}, alphas {list(alphas)})")
        for k, size in enumerate(sizes):
            if int(size) <= 0:
                raise ConfigError(f"source {k} has {size} rows; every source needs at least one")
        check_alphas(alphas)
        if batch_size <= 0:
            raise ConfigError(f"batch_size {batch_size} must be > 0")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in [0, {world_size})")
        self.sizes = [int(n) for n in sizes]
        self.alphas = [float(a) for a in alphas]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch_length = int(epoch_length) if epoch_length is not None else sum(self.sizes)
        if self.epoch_length < self.world_size:
            raise ConfigError(f"epoch_length {self.epoch_length} must be at least the number of ranks ({world_size})")
        self.replacement = bool(replacement)
        self.epoch, self.position = 0, 0
        self._start_epoch()

    # -- the distribution ----------------------------------------------------------------------------------------
    def row_probabilities(self) -> list[float]:
        """Per source k, the probability α_k/n_k that one draw is a given row of source k."""
        return [alpha / size for alpha, size in zip(self.alphas, self.sizes)]

    def expected_passes(self) -> list[float]:
        """Per source k, the expected draws of each of its rows per epoch: L·α_k/n_k."""
        return [self.epoch_length * p for p in self.row_probabilities()]

    def epoch_draws(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(source of each draw, global row index of each draw) for the whole epoch, all ranks (L each)."""
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed % 2**63, int(epoch)])))
        p = np.asarray(self.alphas, dtype=np.float64)
        sources = rng.choice(len(self.sizes), size=self.epoch_length, p=p / p.sum())
        rows = np.empty(self.epoch_length, dtype=np.int64)
        for k, size in enumerate(self.sizes):
            where = np.flatnonzero(sources == k)
            if self.replacement:
                local = rng.integers(0, size, where.size)
            else:
                passes = -(-where.size // size)
                local = np.concatenate([rng.permutation(size) for _ in range(passes)] or [np.empty(0, np.int64)])
                local = local[: where.size]
            rows[where] = self.offsets[k] + local
        return sources, rows

    # -- iteration -----------------------------------------------------------------------------------------------
    def _start_epoch(self) -> None:
        sources, rows = self.epoch_draws(self.epoch)
        usable = len(rows) - len(rows) % self.world_size
        self._sources = sources[:usable]
        self._share = rows[:usable][self.rank :: self.world_size]

    @property
    def share(self) -> np.ndarray:
        """This rank's draws (global row indices) of the current epoch, in order."""
        return self._share

    @property
    def epoch_done(self) -> bool:
        """This rank (and so every rank) has consumed its whole share of the current epoch."""
        return self.position >= len(self._share)

    def next_batch(self) -> list[int]:
        if self.epoch_done:
            self.epoch += 1
            self.position = 0
            self._start_epoch()
        batch = self._share[self.position : self.position + self.batch_size]
        self.position += len(batch)
        return batch.tolist()

    def consumed_counts(self) -> list[int]:
        """Draws per source consumed so far in the current epoch by all ranks together.

        The ranks stand at the same position p, and their shares interleave, so together they consumed exactly the
        first W·p draws of the epoch: known on every rank without communication.
        """
        consumed = self._sources[: self.world_size * self.position]
        return np.bincount(consumed, minlength=len(self.sizes)).tolist()

    # -- resume --------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "world_size": self.world_size,
            "sizes": list(self.sizes),
            "alphas": list(self.alphas),
            "epoch_length": self.epoch_length,
            "replacement": self.replacement,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("world_size", "sizes", "alphas", "epoch_length", "replacement"):
            if key in state and state[key] != getattr(self, key):
                raise ConfigError(
                    f"the saved data order was drawn with {key}={state[key]}, this run has {getattr(self, key)}; "
                    "resume with the same data and number of ranks, or start a new run"
                )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._start_epoch()
