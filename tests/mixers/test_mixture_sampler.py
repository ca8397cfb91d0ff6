"""MixtureSampler: shares converge to α_k, the paper's worked example, balanced passes, DDP shares, exact resume."""

import numpy as np
import pytest
from scipy import stats

from augkd.errors import ConfigError
from augkd.mixers import MixtureSampler


def epoch_counts(sampler: MixtureSampler, epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """(draws per source, draws per row) summed over ``epochs`` epochs."""
    per_source = np.zeros(len(sampler.sizes), dtype=np.int64)
    per_row = np.zeros(sum(sampler.sizes), dtype=np.int64)
    for epoch in range(epochs):
        sources, rows = sampler.epoch_draws(epoch)
        per_source += np.bincount(sources, minlength=len(sampler.sizes))
        per_row += np.bincount(rows, minlength=len(per_row))
    return per_source, per_row


@pytest.mark.parametrize("replacement", [False, True])
def test_realised_shares_converge_to_alpha(replacement):
    sizes, alphas = [300, 120, 50], [0.5, 0.3, 0.2]
    sampler = MixtureSampler(sizes, alphas, batch_size=8, seed=11, replacement=replacement)
    epochs = 200
    per_source, per_row = epoch_counts(sampler, epochs)
    expected = np.asarray(alphas) * sampler.epoch_length * epochs
    chi2 = ((per_source - expected) ** 2 / expected).sum()
    assert stats.chi2.sf(chi2, df=len(sizes) - 1) > 1e-3, (per_source, expected)
    realised = per_source / per_source.sum()
    assert realised == pytest.approx(alphas, abs=0.01)
    # every row of source k is drawn L·α_k/n_k times per epoch on average
    offsets = np.cumsum([0, *sizes])
    for k, passes in enumerate(sampler.expected_passes()):
        mean = per_row[offsets[k] : offsets[k + 1]].mean() / epochs
        assert mean == pytest.approx(passes, rel=0.02)


def test_paper_worked_example_holds_exactly_in_expectation():
    """2M DFT + 1M synthetic, α = 0.5, a 3M-draw epoch: the synthetic set is seen 1.5×, the DFT set 0.75×."""
    sampler = MixtureSampler([2_000_000, 1_000_000], [0.5, 0.5], batch_size=64, seed=0)
    assert sampler.epoch_length == 3_000_000
    p_dft, p_syn = sampler.row_probabilities()
    assert (p_dft, p_syn) == (0.5 / 2_000_000, 0.5 / 1_000_000)
    assert 2_000_000 * p_dft + 1_000_000 * p_syn == 1.0  # one draw is a distribution over all rows
    assert sampler.expected_passes() == [0.75, 1.5]  # exact in binary floating point


@pytest.mark.parametrize("replacement", [False, True])
def test_worked_example_scaled_down_empirically(replacement):
    sampler = MixtureSampler([2000, 1000], [0.5, 0.5], batch_size=64, seed=5, replacement=replacement)
    epochs = 60
    _, per_row = epoch_counts(sampler, epochs)
    assert per_row[:2000].mean() / epochs == pytest.approx(0.75, rel=0.01)
    assert per_row[2000:].mean() / epochs == pytest.approx(1.5, rel=0.01)


def test_without_replacement_passes_are_balanced_within_each_source():
    """A source's c draws in an epoch cover each of its n rows ⌊c/n⌋ or ⌈c/n⌉ times (fresh permutations)."""
    sizes = [2000, 1000, 7]
    sampler = MixtureSampler(sizes, [0.45, 0.45, 0.1], batch_size=64, seed=3)
    offsets = np.cumsum([0, *sizes])
    for epoch in range(5):
        sources, rows = sampler.epoch_draws(epoch)
        for k, size in enumerate(sizes):
            drawn = int((sources == k).sum())
            seen = np.bincount(rows[sources == k] - offsets[k], minlength=size)
            assert set(seen.tolist()) <= {drawn // size, -(-drawn // size)}
            assert rows[sources == k].min() >= offsets[k] and rows[sources == k].max() < offsets[k + 1]


def test_single_source_is_a_permutation_per_epoch():
    sampler = MixtureSampler([37], [1.0], batch_size=5, seed=2)
    for epoch in range(3):
        seen = []
        while True:
            seen += sampler.next_batch()
            if sampler.epoch_done:
                break
        assert sorted(seen) == list(range(37)) and sampler.epoch == epoch
    assert sampler.next_batch() and sampler.epoch == 3


def test_epoch_length_and_zero_share_sources():
    sampler = MixtureSampler([10, 10], [1.0, 0.0], batch_size=4, seed=1, epoch_length=25)
    sources, rows = sampler.epoch_draws(0)
    assert len(rows) == 25 and (sources == 0).all() and rows.max() < 10
    assert sampler.expected_passes() == [2.5, 0.0]


def test_epochs_differ_and_depend_only_on_seed_and_epoch():
    a = MixtureSampler([50, 30], [0.4, 0.6], batch_size=4, seed=9)
    b = MixtureSampler([50, 30], [0.4, 0.6], batch_size=16, seed=9, world_size=2, rank=1)
    assert np.array_equal(a.epoch_draws(3)[1], b.epoch_draws(3)[1])
    assert not np.array_equal(a.epoch_draws(3)[1], a.epoch_draws(4)[1])
    assert not np.array_equal(a.epoch_draws(3)[1], MixtureSampler([50, 30], [0.4, 0.6], 4, seed=10).epoch_draws(3)[1])


def test_ddp_ranks_draw_disjoint_deterministic_shares():
    sizes, alphas, world = [40, 23], [0.3, 0.7], 3
    full = MixtureSampler(sizes, alphas, batch_size=4, seed=4).epoch_draws(0)[1]
    usable = len(full) - len(full) % world
    ranks = [MixtureSampler(sizes, alphas, batch_size=4, seed=4, rank=r, world_size=world) for r in range(world)]
    shares = [r.share.copy() for r in ranks]
    assert {len(s) for s in shares} == {usable // world}
    # disjoint draws: together the shares are the one-process order, interleaved rank by rank
    interleaved = np.empty(usable, dtype=np.int64)
    for r, share in enumerate(shares):
        interleaved[r::world] = share
    assert np.array_equal(interleaved, full[:usable])
    # deterministic: a rank started again draws the same share, batch by batch
    again = MixtureSampler(sizes, alphas, batch_size=4, seed=4, rank=2, world_size=world)
    assert sum((again.next_batch() for _ in range(3)), []) == shares[2][:12].tolist()
    # every rank knows what all ranks consumed so far, without talking to them
    for sampler in ranks:
        for _ in range(2):
            sampler.next_batch()
    sources = MixtureSampler(sizes, alphas, batch_size=4, seed=4).epoch_draws(0)[0]
    expected = np.bincount(sources[: world * 8], minlength=2).tolist()
    assert all(s.consumed_counts() == expected for s in ranks)


def test_without_replacement_large_source_rows_are_disjoint_across_ranks():
    """When a source is big enough for its draws, no row is drawn twice in an epoch: not even on two ranks."""
    sampler = [MixtureSampler([500, 400], [0.5, 0.5], 8, seed=6, rank=r, world_size=2, epoch_length=600)
               for r in range(2)]
    a, b = sampler[0].share, sampler[1].share
    assert len(a) == len(b) == 300 and not set(a.tolist()) & set(b.tolist())
    assert len(set(a.tolist())) == 300


@pytest.mark.parametrize("world", [1, 2])
def test_resume_reproduces_the_sequence(world):
    args = ([30, 11], [0.6, 0.4], 4)
    for rank in range(world):
        straight = MixtureSampler(*args, seed=8, rank=rank, world_size=world)
        expected = [straight.next_batch() for _ in range(40)]  # several epochs
        first = MixtureSampler(*args, seed=8, rank=rank, world_size=world)
        got = [first.next_batch() for _ in range(13)]
        state = first.state_dict()
        resumed = MixtureSampler(*args, seed=8, rank=rank, world_size=world)
        resumed.load_state_dict(state)
        got += [resumed.next_batch() for _ in range(27)]
        assert got == expected
        assert straight.epoch > 1


def test_resume_refuses_another_mixture_or_world_size():
    state = MixtureSampler([30, 11], [0.6, 0.4], 4, seed=8).state_dict()
    with pytest.raises(ConfigError, match="world_size=1"):
        MixtureSampler([30, 11], [0.6, 0.4], 4, seed=8, world_size=2).load_state_dict(state)
    with pytest.raises(ConfigError, match="sizes"):
        MixtureSampler([30, 12], [0.6, 0.4], 4, seed=8).load_state_dict(state)


@pytest.mark.parametrize(
    ("sizes", "alphas", "message"),
    [
        ([10, 10], [0.7, 0.7], "must sum to 1"),
        ([10, 10], [1.2, -0.2], r"alpha 1\.2 of source 0 must be in \[0, 1\]"),
        ([10, 0], [0.5, 0.5], "source 1 has 0 rows"),
        ([10], [0.5, 0.5], "one alpha per source"),
    ],
)
def test_bad_mixtures(sizes, alphas, message):
    with pytest.raises(ConfigError, match=message):
        MixtureSampler(sizes, alphas, batch_size=2, seed=0)
