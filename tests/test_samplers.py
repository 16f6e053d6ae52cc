"""RRD sampling and the teacher top-N lists on small synthetic data (CPU, no RecBole)."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import scipy.sparse as sp
import torch

from recbole_kd.model.sampler.positives import PositiveRows
from recbole_kd.model.sampler.relaxed_ranking import RelaxedRankingSampler, teacher_top_n
from tests.sampling_helpers import check_frequencies, list_positions, random_positives, same_rows


def test_positive_rows_mask_matches_dense_matrix() -> None:
    csr = random_positives(9, 13, most=5, seed=0)
    users = torch.tensor([4, 0, 8, 4, 2])
    dense = torch.from_numpy(csr.toarray() != 0)[users]
    assert torch.equal(PositiveRows(csr, "cpu").mask(users, padding=False), dense)
    dense[:, 0] = True
    assert torch.equal(PositiveRows(csr, "cpu").mask(users), dense)


def test_positive_rows_count_a_repeated_entry_once_and_leave_the_matrix_alone() -> None:
    # User 1 lists item 2 twice (a CSR need not be canonical): one positive, and the caller's
    # matrix keeps its entries.
    indptr, indices, data = [0, 0, 3], [2, 4, 2], [1.0, 1.0, 1.0]
    csr = sp.csr_matrix((data, indices, indptr), shape=(2, 5))
    rows = PositiveRows(csr, "cpu")
    assert rows.counts.tolist() == [0, 2]
    mask = rows.mask(torch.tensor([1]), padding=False)
    assert mask.tolist() == [[False, False, True, False, True]]
    assert csr.indptr.tolist() == indptr
    assert csr.indices.tolist() == indices
    assert csr.data.tolist() == data


def test_chunks_of_no_user_are_refused() -> None:
    csr = same_rows(3, 10, [1])
    with pytest.raises(ValueError, match="kd_chunk_size"):
        teacher_top_n(lambda u: torch.rand(len(u), 10), csr, 2, 0, "cpu")


def test_teacher_top_n_matches_slow_reference_for_any_chunking() -> None:
    n_users, n_items, n = 7, 15, 6
    csr = random_positives(n_users, n_items, most=4, seed=1)
    scores = torch.randn(n_users, n_items, generator=torch.Generator().manual_seed(1))
    # Make the excluded items the most tempting ones, so a missing mask shows.
    scores[:, 0] += 100.0
    scores[torch.from_numpy(csr.toarray() != 0)] += 50.0
    expected = []
    for user in range(n_users):
        allowed = [j for j in range(1, n_items) if csr[user, j] == 0]
        expected.append(sorted(allowed, key=lambda j: -scores[user, j].item())[:n])
    for chunk_size in (1, 3, 100):
        top = teacher_top_n(lambda u: scores[u], csr, n, chunk_size, "cpu")
        assert top.tolist() == expected
    assert (top != 0).all()
    assert (scores.gather(1, top).diff(dim=1) < 0).all()


def test_teacher_top_n_rejects_a_list_longer_than_the_candidates(capsys) -> None:
    csr = same_rows(3, 10, [1, 2, 3])  # 10 - 1 - 3 = 6 candidates per user
    assert teacher_top_n(lambda u: torch.rand(len(u), 10), csr, 6, 2, "cpu").shape == (3, 6)
    assert capsys.readouterr().err == ""  # no progress bar unless asked for
    assert teacher_top_n(lambda u: torch.rand(len(u), 10), csr, 1, 2, "cpu").shape == (3, 1)
    with pytest.raises(ValueError, match="rrd_top_n"):
        teacher_top_n(lambda u: torch.rand(len(u), 10), csr, 7, 2, "cpu")
    with pytest.raises(ValueError, match="rrd_top_n"):
        teacher_top_n(lambda u: torch.rand(len(u), 10), csr, 0, 2, "cpu")
    # Without users the limit is still every item but padding item 0.
    empty = sp.csr_matrix((0, 10))
    assert teacher_top_n(lambda u: torch.rand(len(u), 10), empty, 9, 2, "cpu").shape == (0, 9)
    with pytest.raises(ValueError, match="rrd_top_n"):
        teacher_top_n(lambda u: torch.rand(len(u), 10), empty, 10, 2, "cpu")


# ---------------------------------------------------------------- RRD sampler


def _rrd_setup(**kwargs) -> tuple[RelaxedRankingSampler, sp.csr_matrix]:
    n_users, n_items = 40, 30
    csr = random_positives(n_users, n_items, most=5, seed=2)
    scores = torch.randn(n_users, n_items, generator=torch.Generator().manual_seed(2))
    top = teacher_top_n(lambda u: scores[u], csr, 12, 16, "cpu")
    params = {"n_interesting": 5, "n_uninteresting": 6, "temperature": 3.0, "chunk_size": 7}
    params.update(kwargs)
    return RelaxedRankingSampler(top, csr, n_items, **params), csr


def test_rrd_interesting_items_keep_the_teacher_order() -> None:
    sampler, _ = _rrd_setup()
    for _ in range(5):
        interesting, _ = sampler.sample()
        positions = list_positions(sampler.top_n, interesting)
        assert (positions >= 0).all()
        assert (positions.diff(dim=1) > 0).all()


def test_rrd_uninteresting_items_are_eligible_and_distinct() -> None:
    sampler, csr = _rrd_setup()
    positives = torch.from_numpy(csr.toarray() != 0)
    for _ in range(5):
        _, uninteresting = sampler.sample()
        assert not positives.gather(1, uninteresting).any()
        assert (list_positions(sampler.top_n, uninteresting) == -1).all()
        assert (uninteresting != 0).all()
        assert (uninteresting.sort(dim=1).values.diff(dim=1) != 0).all()


def test_rrd_without_subsampling_takes_the_head_of_the_list() -> None:
    sampler, _ = _rrd_setup(subsample=False)
    for _ in range(2):
        interesting, _ = sampler.sample()
        assert torch.equal(interesting, sampler.top_n[:, :5])


def _plackett_luce(weights: list[float], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact P(position chosen) and P(position is the best chosen) of a k-draw without
    replacement with probabilities proportional to ``weights``, by enumerating ordered draws."""
    inclusion, best = [0.0] * len(weights), [0.0] * len(weights)
    for draw in itertools.permutations(range(len(weights)), k):
        prob, left = 1.0, sum(weights)
        for pos in draw:
            prob *= weights[pos] / left
            left -= weights[pos]
        for pos in draw:
            inclusion[pos] += prob
        best[min(draw)] += prob
    return torch.tensor(inclusion, dtype=torch.float64), torch.tensor(best, dtype=torch.float64)


@pytest.mark.parametrize("k", [1, 3])
def test_rrd_positions_follow_exp_rank_weights(k: int) -> None:
    n_users, n_items, n, temperature = 20_000, 12, 6, 2.0
    top = torch.arange(1, n + 1).repeat(n_users, 1)  # item = position + 1
    csr = sp.csr_matrix((n_users, n_items))
    sampler = RelaxedRankingSampler(top, csr, n_items, k, 2, temperature, seed=3, chunk_size=4096)
    positions = sampler.sample()[0] - 1
    weights = [math.exp(-r / temperature) for r in range(1, n + 1)]
    inclusion, best = _plackett_luce(weights, k)
    if k == 1:  # one draw: exactly proportional to the weights
        expected = torch.tensor(weights, dtype=torch.float64) / sum(weights)
        torch.testing.assert_close(inclusion, expected, rtol=0.0, atol=1e-12)
    tol = check_frequencies(torch.bincount(positions.flatten(), minlength=n), n_users, inclusion)
    check_frequencies(torch.bincount(positions[:, 0], minlength=n), n_users, best)
    # The check has power: uniform inclusion (k / n each) would fail it.
    assert ((inclusion - k / n).abs() > tol).any()


# Exponent 0 sizes the rejection draw to L survivors on average: many rows fall short of L and
# take the dense draw, whose rows must be as uniform and land in the same places.
@pytest.mark.parametrize("shortfall_exponent", [14, 0])
def test_rrd_uninteresting_subsets_are_uniform(monkeypatch, shortfall_exponent: int) -> None:
    monkeypatch.setattr(RelaxedRankingSampler, "_shortfall_exponent", shortfall_exponent)
    n_users, n_items = 20_000, 12
    top = torch.tensor([3, 4, 5]).repeat(n_users, 1)
    csr = same_rows(n_users, n_items, [1, 2])
    sampler = RelaxedRankingSampler(top, csr, n_items, 1, 2, seed=4, chunk_size=4096)
    uninteresting = sampler.sample()[1]
    eligible = list(range(6, n_items))
    assert torch.isin(uninteresting, torch.tensor(eligible)).all()
    assert (uninteresting[:, 0] != uninteresting[:, 1]).all()  # without replacement
    counts = torch.bincount(uninteresting.flatten(), minlength=n_items)[eligible]
    check_frequencies(counts, n_users, torch.full((6,), 2 / 6))
    # Every unordered pair of the 6 eligible items is one of 15 equally likely subsets.
    low, high = uninteresting.min(dim=1).values, uninteresting.max(dim=1).values
    pair_counts = torch.bincount(low * n_items + high, minlength=n_items**2)
    pairs = [a * n_items + b for a, b in itertools.combinations(eligible, 2)]
    check_frequencies(pair_counts[pairs], n_users, torch.full((15,), 1 / 15))


def test_rrd_rejects_impossible_sizes_and_fills_an_exact_fit() -> None:
    top = torch.tensor([[3, 4], [5, 6]])
    csr = same_rows(2, 10, [1, 2])  # eligible: 10 - 1 - 2 - 2 = 5 items per user
    with pytest.raises(ValueError, match="rrd_interesting"):
        RelaxedRankingSampler(top, csr, 10, 3, 1)
    with pytest.raises(ValueError, match="rrd_uninteresting"):
        RelaxedRankingSampler(top, csr, 10, 1, 6)
    _, uninteresting = RelaxedRankingSampler(top, csr, 10, 2, 5).sample()
    assert uninteresting.sort(dim=1).values.tolist() == [[5, 6, 7, 8, 9], [3, 4, 7, 8, 9]]
    # No uninteresting items at all is allowed: empty rows.
    assert RelaxedRankingSampler(top, csr, 10, 2, 0).sample()[1].shape == (2, 0)


def test_rrd_many_uninteresting_items_are_eligible_and_distinct() -> None:
    n_users, n_items, n_draws = 50, 60, 20
    csr = random_positives(n_users, n_items, most=5, seed=6)
    scores = torch.randn(n_users, n_items, generator=torch.Generator().manual_seed(6))
    top = teacher_top_n(lambda u: scores[u], csr, 5, 16, "cpu")
    sampler = RelaxedRankingSampler(top, csr, n_items, 2, n_draws, seed=6)
    uninteresting = sampler.sample()[1]
    assert uninteresting.shape == (n_users, n_draws)
    assert not torch.from_numpy(csr.toarray() != 0).gather(1, uninteresting).any()
    assert (list_positions(top, uninteresting) == -1).all()
    assert (uninteresting != 0).all()
    assert (uninteresting.sort(dim=1).values.diff(dim=1) != 0).all()


def test_rrd_default_temperature_is_the_papers() -> None:
    # T = 10, as in RRD.yaml.
    top = torch.arange(1, 13).repeat(40, 1)
    csr = sp.csr_matrix((40, 30))
    draws = [
        RelaxedRankingSampler(top, csr, 30, 5, 6, seed=7, **extra).sample()[0]
        for extra in ({}, {"temperature": 10.0})
    ]
    assert torch.equal(draws[0], draws[1])


def test_rrd_rejects_top_n_lists_that_are_not_candidates() -> None:
    csr = same_rows(5, 10, [1])
    top = torch.tensor([[3, 4]] * 5)
    for bad in (0, 10, 11):  # padding, one past the last item, further out
        wrong = top.clone()
        wrong[4, 1] = bad
        with pytest.raises(ValueError, match="outside"):
            RelaxedRankingSampler(wrong, csr, 10, 1, 1)
    # Positives must be [n_users, n_items]: neither more nor fewer rows or items.
    for shape in ((4, 10), (6, 10), (5, 9), (5, 11)):
        with pytest.raises(ValueError, match=r"expected n_items=10 columns and a top_n row per user"):
            RelaxedRankingSampler(top, sp.csr_matrix(shape), 10, 1, 1)
    # K, T and L are checked against the lists, not against the number of users.
    for k in (0, 3):
        with pytest.raises(ValueError, match="rrd_interesting"):
            RelaxedRankingSampler(top, csr, 10, k, 1)
    for temperature in (0.0, -0.5):
        with pytest.raises(ValueError, match="rrd_temperature"):
            RelaxedRankingSampler(top, csr, 10, 1, 1, temperature=temperature)
    RelaxedRankingSampler(top, csr, 10, 1, 1, temperature=0.0, subsample=False)
    RelaxedRankingSampler(top, csr, 10, 1, 1, temperature=0.5)  # any T > 0
    with pytest.raises(ValueError, match="rrd_uninteresting"):
        RelaxedRankingSampler(top, csr, 10, 1, -1)
    # Every user's list is checked, not only the first ones (5 users, lists of 2).
    wrong = top.clone()
    wrong[4, 1] = 1
    with pytest.raises(ValueError, match="training positive"):
        RelaxedRankingSampler(wrong, csr, 10, 1, 1)
    # The size limit is the fewest eligible items of any user, the last one included.
    crowded = same_rows(5, 10, [1]).tolil()
    crowded[4, 5:8] = 1.0
    with pytest.raises(ValueError, match="rrd_uninteresting"):
        RelaxedRankingSampler(top, crowded.tocsr(), 10, 1, 4)


def test_rrd_uninteresting_items_reach_every_eligible_item() -> None:
    # Items 1 and n_items - 1 are as eligible as any other, from the rejection draw too.
    n_users, n_items = 2_000, 12
    top = torch.tensor([5, 6]).repeat(n_users, 1)
    csr = same_rows(n_users, n_items, [3])
    sampler = RelaxedRankingSampler(top, csr, n_items, 1, 2, seed=5)
    drawn = torch.bincount(sampler.sample()[1].flatten(), minlength=n_items)
    eligible = [1, 2, 4, 7, 8, 9, 10, 11]
    check_frequencies(drawn[eligible], n_users, torch.full((8,), 2 / 8))
    assert drawn.sum() == 2 * n_users


def test_rrd_redraw_and_state_round_trip() -> None:
    sampler, _ = _rrd_setup()
    with pytest.raises(RuntimeError):
        sampler.for_users(torch.tensor([1]))
    assert sampler.n_samples == 0
    before = [t.clone() for t in sampler.sample()]
    assert sampler.n_samples == 1
    # A new epoch's draws go into new tensors: what a caller kept does not change under it.
    kept = sampler.interesting, sampler.uninteresting
    after = sampler.sample()
    assert sampler.n_samples == 2
    assert torch.equal(kept[0], before[0]) and torch.equal(kept[1], before[1])
    assert not torch.equal(after[1], before[1])  # each epoch draws anew
    users = torch.tensor([2, 5])
    assert torch.equal(sampler.for_users(users)[1], after[1][users])
    state = copy.deepcopy(sampler.state_dict())
    expected = sampler.sample()
    resumed, _ = _rrd_setup()
    resumed.load_state_dict(state)
    with pytest.raises(RuntimeError):  # nothing drawn yet for this epoch
        resumed.for_users(users)
    for got, want in zip(resumed.sample(), expected):
        assert torch.equal(got, want)
    # The draws follow from the seed: another seed draws other items.
    other, _ = _rrd_setup(seed=123)
    other.load_state_dict(state)
    assert not torch.equal(other.sample()[1], expected[1])


# ---------------------------------------------------------------- BD: ranks and weights

