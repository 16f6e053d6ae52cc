"""Behaviour of the RRD and BD samplers on small synthetic data (CPU, no RecBole)."""

from __future__ import annotations

import copy
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recbole_kd.rank_discrepancy import (
    RankDiscrepancySampler,
    discrepancy_weights,
    occurrence_index,
    ranks_from_scores,
)
from recbole_kd.samplers import PositiveRows, RelaxedRankingSampler, teacher_top_n

SIGMAS = 5.0  # tolerance of every frequency check, in binomial standard deviations


def _random_positives(n_users: int, n_items: int, most: int, seed: int) -> sp.csr_matrix:
    """1..most distinct positives among items 1..n_items-1 for every user but padding user 0."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for user in range(1, n_users):
        items = rng.choice(np.arange(1, n_items), size=rng.integers(1, most + 1), replace=False)
        rows += [user] * len(items)
        cols += items.tolist()
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, n_items))


def _same_rows(n_users: int, n_items: int, items: list[int]) -> sp.csr_matrix:
    """The same positives ``items`` for every user (padding user 0 included)."""
    dense = np.zeros((n_users, n_items))
    dense[:, items] = 1.0
    return sp.csr_matrix(dense)


def _check_frequencies(counts: torch.Tensor, n: int, probs: torch.Tensor) -> torch.Tensor:
    """Asserts |counts / n - probs| <= SIGMAS binomial sd, entry-wise; returns the tolerances."""
    probs = probs.double()
    tol = SIGMAS * torch.sqrt(probs * (1 - probs) / n) + 1e-12
    freq = counts.double() / n
    assert ((freq - probs).abs() <= tol).all(), (freq, probs, tol)
    return tol


def _positions(top: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Index of each of ``items`` [U, K] in its row of ``top`` [U, N]; -1 when absent."""
    hits = top[:, None, :] == items[:, :, None]
    return torch.where(hits.any(-1), hits.int().argmax(-1), -1)


# ---------------------------------------------------------------- positives mask and top-N


def test_positive_rows_mask_matches_dense_matrix() -> None:
    csr = _random_positives(9, 13, most=5, seed=0)
    users = torch.tensor([4, 0, 8, 4, 2])
    dense = torch.from_numpy(csr.toarray() != 0)[users]
    assert torch.equal(PositiveRows(csr, "cpu").mask(users, padding=False), dense)
    dense[:, 0] = True
    assert torch.equal(PositiveRows(csr, "cpu").mask(users), dense)


def test_teacher_top_n_matches_slow_reference_for_any_chunking() -> None:
    n_users, n_items, n = 7, 15, 6
    csr = _random_positives(n_users, n_items, most=4, seed=1)
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


def test_teacher_top_n_rejects_a_list_longer_than_the_candidates() -> None:
    csr = _same_rows(3, 10, [1, 2, 3])  # 10 - 1 - 3 = 6 candidates per user
    assert teacher_top_n(lambda u: torch.rand(len(u), 10), csr, 6, 2, "cpu").shape == (3, 6)
    with pytest.raises(ValueError, match="rrd_top_n"):
        teacher_top_n(lambda u: torch.rand(len(u), 10), csr, 7, 2, "cpu")


# ---------------------------------------------------------------- RRD sampler


def _rrd_setup(**kwargs) -> tuple[RelaxedRankingSampler, sp.csr_matrix]:
    n_users, n_items = 40, 30
    csr = _random_positives(n_users, n_items, most=5, seed=2)
    scores = torch.randn(n_users, n_items, generator=torch.Generator().manual_seed(2))
    top = teacher_top_n(lambda u: scores[u], csr, 12, 16, "cpu")
    params = {"n_interesting": 5, "n_uninteresting": 6, "temperature": 3.0, "chunk_size": 7}
    params.update(kwargs)
    return RelaxedRankingSampler(top, csr, n_items, **params), csr


def test_rrd_interesting_items_keep_the_teacher_order() -> None:
    sampler, _ = _rrd_setup()
    for _ in range(5):
        interesting, _ = sampler.sample()
        positions = _positions(sampler.top_n, interesting)
        assert (positions >= 0).all()
        assert (positions.diff(dim=1) > 0).all()


def test_rrd_uninteresting_items_are_eligible_and_distinct() -> None:
    sampler, csr = _rrd_setup()
    positives = torch.from_numpy(csr.toarray() != 0)
    for _ in range(5):
        _, uninteresting = sampler.sample()
        assert not positives.gather(1, uninteresting).any()
        assert (_positions(sampler.top_n, uninteresting) == -1).all()
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
    tol = _check_frequencies(torch.bincount(positions.flatten(), minlength=n), n_users, inclusion)
    _check_frequencies(torch.bincount(positions[:, 0], minlength=n), n_users, best)
    # The check has power: uniform inclusion (k / n each) would fail it.
    assert ((inclusion - k / n).abs() > tol).any()


def test_rrd_uninteresting_subsets_are_uniform() -> None:
    n_users, n_items = 20_000, 12
    top = torch.tensor([3, 4, 5]).repeat(n_users, 1)
    csr = _same_rows(n_users, n_items, [1, 2])
    sampler = RelaxedRankingSampler(top, csr, n_items, 1, 2, seed=4, chunk_size=4096)
    uninteresting = sampler.sample()[1]
    eligible = list(range(6, n_items))
    assert torch.isin(uninteresting, torch.tensor(eligible)).all()
    counts = torch.bincount(uninteresting.flatten(), minlength=n_items)[eligible]
    _check_frequencies(counts, n_users, torch.full((6,), 2 / 6))
    # Every unordered pair of the 6 eligible items is one of 15 equally likely subsets.
    low, high = uninteresting.min(dim=1).values, uninteresting.max(dim=1).values
    pair_counts = torch.bincount(low * n_items + high, minlength=n_items**2)
    pairs = [a * n_items + b for a, b in itertools.combinations(eligible, 2)]
    _check_frequencies(pair_counts[pairs], n_users, torch.full((15,), 1 / 15))


def test_rrd_rejects_impossible_sizes_and_fills_an_exact_fit() -> None:
    top = torch.tensor([[3, 4], [5, 6]])
    csr = _same_rows(2, 10, [1, 2])  # eligible: 10 - 1 - 2 - 2 = 5 items per user
    with pytest.raises(ValueError, match="rrd_interesting"):
        RelaxedRankingSampler(top, csr, 10, 3, 1)
    with pytest.raises(ValueError, match="rrd_uninteresting"):
        RelaxedRankingSampler(top, csr, 10, 1, 6)
    _, uninteresting = RelaxedRankingSampler(top, csr, 10, 2, 5).sample()
    assert uninteresting.sort(dim=1).values.tolist() == [[5, 6, 7, 8, 9], [3, 4, 7, 8, 9]]


def test_rrd_partial_redraw_and_state_round_trip() -> None:
    sampler, _ = _rrd_setup()
    with pytest.raises(RuntimeError):
        sampler.for_users(torch.tensor([1]))
    before = [t.clone() for t in sampler.sample()]
    users = torch.tensor([2, 5])
    rows = sampler.sample(users)
    others = torch.ones(len(before[0]), dtype=torch.bool)
    others[users] = False
    for old, new, part in zip(before, (sampler.interesting, sampler.uninteresting), rows):
        assert torch.equal(old[others], new[others])
        assert torch.equal(new[users], part)
    state = copy.deepcopy(sampler.state_dict())
    expected = sampler.sample()
    resumed, _ = _rrd_setup(seed=123)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.for_users(users)[0], rows[0])
    for got, want in zip(resumed.sample(), expected):
        assert torch.equal(got, want)


# ---------------------------------------------------------------- BD: ranks and weights


def test_ranks_follow_each_convention_and_skip_excluded_items() -> None:
    scores = torch.tensor([[9.0, 4.0, 3.0, 2.0, 1.0], [9.0, 1.0, 4.0, 2.0, 3.0]])
    excluded = torch.zeros_like(scores, dtype=torch.bool)
    excluded[:, 0] = True
    assert ranks_from_scores(scores, excluded, "paper").tolist() == [
        [0, 1, 2, 3, 4],
        [0, 4, 1, 3, 2],
    ]
    assert ranks_from_scores(scores, excluded, "reference_code").tolist() == [
        [0, 4, 3, 2, 1],
        [0, 1, 4, 2, 3],
    ]
    ties = torch.tensor([[2.0, 1.0, 2.0]])  # ties go to the lower item id first
    assert ranks_from_scores(ties, None, "paper").tolist() == [[1, 3, 2]]
    assert ranks_from_scores(ties, None, "reference_code").tolist() == [[2, 1, 3]]
    signs = torch.tensor([[-1.0, 2.0, -3.0, 0.0, -0.0, math.inf, -math.inf]])  # 0.0 ties -0.0
    assert ranks_from_scores(signs, None, "paper").tolist() == [[5, 2, 6, 3, 4, 1, 7]]
    assert ranks_from_scores(signs, None, "reference_code").tolist() == [[3, 6, 2, 4, 5, 7, 1]]
    with pytest.raises(ValueError, match="convention"):
        ranks_from_scores(ties, None, "descending")


@pytest.mark.parametrize("convention", ["paper", "reference_code"])
def test_ranks_match_a_float_sort(convention: str) -> None:
    scores = torch.randn(5, 300, generator=torch.Generator().manual_seed(11)) * 1e3
    excluded = torch.rand(5, 300, generator=torch.Generator().manual_seed(12)) < 0.2
    ranks = ranks_from_scores(scores, excluded, convention)
    for row in range(5):
        eligible = torch.nonzero(~excluded[row]).flatten()
        order = eligible[scores[row, eligible].argsort(descending=convention == "paper")]
        assert ranks[row, order].tolist() == list(range(1, len(eligible) + 1))
        assert (ranks[row, excluded[row]] == 0).all()


@pytest.mark.parametrize(
    ("convention", "to_student", "to_teacher"),
    [
        # rank_S - rank_T = [3, -1, 0, -2] on items 1..4
        ("paper", [0, 0.905148, 0, 0, 0], [0, 0.082085, 0.606531, 0.367879, 1.0]),
        # rank_S - rank_T = [-3, 1, 0, 2]: the ascending sort reverses both directions
        ("reference_code", [0, 0, 0.462117, 0, 0.761594], [0, 1.0, 0.135335, 0.223130, 0.082085]),
    ],
)
def test_discrepancy_weights_match_hand_computed_values(
    convention: str, to_student: list[float], to_teacher: list[float]
) -> None:
    teacher = torch.tensor([[9.0, 4.0, 3.0, 2.0, 1.0]])
    student = torch.tensor([[9.0, 1.0, 4.0, 2.0, 3.0]])
    excluded = torch.tensor([[True, False, False, False, False]])
    rank_t, rank_s = (ranks_from_scores(s, excluded, convention) for s in (teacher, student))
    w_s, w_t = discrepancy_weights(rank_t, rank_s, eps_t=0.5, eps_s=0.5, exclude_mask=excluded)
    torch.testing.assert_close(w_s, torch.tensor([to_student]), rtol=0, atol=1e-6)
    torch.testing.assert_close(w_t, torch.tensor([to_teacher]), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- BD sampler


def _reference_weights(
    teacher: list[float], student: list[float], eligible: list[int], convention: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-user normalised weights of both directions, straight from the formulas (eps 0.5, 0.3)."""
    sign = -1.0 if convention == "paper" else 1.0
    rank_t = {j: r for r, j in enumerate(sorted(eligible, key=lambda j: sign * teacher[j]))}
    rank_s = {j: r for r, j in enumerate(sorted(eligible, key=lambda j: sign * student[j]))}
    w_s, w_t = torch.zeros(len(teacher)), torch.zeros(len(teacher))
    for j in eligible:
        w_s[j] = math.tanh(max(0.5 * (rank_s[j] - rank_t[j]), 0.0))
        w_t[j] = math.exp(0.3 * (rank_t[j] - rank_s[j]))
    return w_s / w_s.sum(), w_t / w_t.sum()


# Positives of the BD fixture, 4 users x 8 items: |I_u| = 0, 1, 2, 1.
_BD_POSITIVES = sp.csr_matrix((np.ones(4), ([1, 2, 2, 3], [1, 2, 3, 4])), shape=(4, 8))


def _bd_setup(convention: str = "paper", **kwargs) -> tuple[RankDiscrepancySampler, dict]:
    n_items = 8
    csr = _BD_POSITIVES
    gen = torch.Generator().manual_seed(5)
    scores = {"teacher": torch.randn(4, n_items, generator=gen)}
    scores["student"] = torch.randn(4, n_items, generator=gen)
    params = {"eps_t": 0.5, "eps_s": 0.3, "items_per_positive": 3, "seed": 6, "chunk_size": 2}
    params.update(kwargs)
    sampler = RankDiscrepancySampler(csr, n_items, convention=convention, **params)
    return sampler, scores


def _refresh(sampler: RankDiscrepancySampler, scores: dict, epochs: int) -> None:
    sampler.refresh(lambda u: scores["teacher"][u], lambda u: scores["student"][u], epochs)


def _check_pool(
    sampler: RankDiscrepancySampler,
    user: int,
    expected: tuple[torch.Tensor, torch.Tensor],
    eligible: list[int],
) -> None:
    """Both pools of ``user`` follow ``expected`` normalised weights [n_items] (5 sigma), never
    hold a zero-weight item, and differ from uniform draws over ``eligible`` beyond tolerance."""
    lo, hi = sampler.offsets[user].item(), sampler.offsets[user + 1].item()
    for pool, probs in zip((sampler.pool_student, sampler.pool_teacher), expected):
        counts = torch.bincount(pool[lo:hi].long(), minlength=len(probs))
        assert (counts[probs == 0] == 0).all()  # zero weight, excluded, item 0: never drawn
        tol = _check_frequencies(counts, hi - lo, probs)
        assert ((probs[eligible] - 1 / len(eligible)).abs() > tol[eligible]).any()


@pytest.mark.parametrize("convention", ["paper", "reference_code"])
def test_bd_draws_follow_the_normalised_weights(convention: str) -> None:
    sampler, scores = _bd_setup(convention)
    _refresh(sampler, scores, epochs=2000)
    assert sampler.offsets.diff().tolist() == [0, 1 * 3 * 2000, 2 * 3 * 2000, 1 * 3 * 2000]
    has_zero_weight_item = False
    for user, eligible in ((1, [2, 3, 4, 5, 6, 7]), (2, [1, 4, 5, 6, 7]), (3, [1, 2, 3, 5, 6, 7])):
        teacher, student = scores["teacher"][user].tolist(), scores["student"][user].tolist()
        expected = _reference_weights(teacher, student, eligible, convention)
        _check_pool(sampler, user, expected, eligible)
        has_zero_weight_item |= bool((expected[0][eligible] == 0).any())
    assert has_zero_weight_item  # the fixture does exercise zero student-direction weights


def test_bd_score_zero_mode_ranks_positives_at_score_zero() -> None:
    # Reference quirk: positives are scored 0 by both models, then ranked and drawn as others.
    sampler, scores = _bd_setup(positives_mode="score_zero")
    _refresh(sampler, scores, epochs=2000)
    positives = torch.from_numpy(_BD_POSITIVES.toarray() != 0)
    eligible = list(range(1, 8))  # positives included, only item 0 left out
    for user in (1, 2, 3):
        teacher = scores["teacher"][user].masked_fill(positives[user], 0.0).tolist()
        student = scores["student"][user].masked_fill(positives[user], 0.0).tolist()
        expected = _reference_weights(teacher, student, eligible, "paper")
        _check_pool(sampler, user, expected, eligible)


def test_bd_agreeing_models_fall_back_to_uniform_student_draws() -> None:
    sampler, scores = _bd_setup()
    scores["student"] = scores["teacher"]
    _refresh(sampler, scores, epochs=2000)
    lo, hi = sampler.offsets[2].item(), sampler.offsets[3].item()
    counts = torch.bincount(sampler.pool_student[lo:hi].long(), minlength=8)
    probs = torch.tensor([0, 1, 0, 0, 1, 1, 1, 1]) / 5.0
    _check_frequencies(counts, hi - lo, probs)


def test_occurrence_index_counts_earlier_rows_of_the_same_user() -> None:
    assert occurrence_index(torch.tensor([3, 1, 3, 3, 1, 2])).tolist() == [0, 0, 1, 2, 1, 0]


def _batches(seed: int, n: int = 6) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 4, (9,), generator=gen) for _ in range(n)]


def test_bd_next_items_hand_out_each_pool_in_order_and_wrap_around() -> None:
    sampler, scores = _bd_setup(items_per_positive=1)
    _refresh(sampler, scores, epochs=3)  # pools of 3, 6 and 3 draws: 54 rows wrap around
    got: dict[int, list[tuple[int, int]]] = {1: [], 2: [], 3: []}
    for users in _batches(seed=7):
        student, teacher = sampler.next_items(users)
        for user, s_item, t_item in zip(users.tolist(), student.tolist(), teacher.tolist()):
            got[user].append((s_item, t_item))
    for user, draws in got.items():
        lo, hi = sampler.offsets[user].item(), sampler.offsets[user + 1].item()
        pool = list(zip(sampler.pool_student[lo:hi].tolist(), sampler.pool_teacher[lo:hi].tolist()))
        assert len(draws) > len(pool)
        assert draws == [pool[i % len(pool)] for i in range(len(draws))]
    with pytest.raises(ValueError, match="without BD draws"):
        sampler.next_items(torch.tensor([0]))


def test_bd_state_dict_round_trip_continues_identically() -> None:
    sampler, scores = _bd_setup()
    _refresh(sampler, scores, epochs=4)
    for users in _batches(seed=8, n=3):
        sampler.next_items(users)
    state = copy.deepcopy(sampler.state_dict())
    resumed, _ = _bd_setup(seed=99)
    resumed.load_state_dict(state)
    for users in _batches(seed=9):
        for got, want in zip(resumed.next_items(users), sampler.next_items(users)):
            assert torch.equal(got, want)
    _refresh(sampler, scores, epochs=4)
    _refresh(resumed, scores, epochs=4)
    assert torch.equal(resumed.pool_student, sampler.pool_student)
    assert torch.equal(resumed.pool_teacher, sampler.pool_teacher)


def test_bd_rejects_unknown_options() -> None:
    csr = _same_rows(2, 5, [1])
    with pytest.raises(ValueError, match="convention"):
        RankDiscrepancySampler(csr, 5, convention="ascending")
    with pytest.raises(ValueError, match="positives_mode"):
        RankDiscrepancySampler(csr, 5, positives_mode="keep")
    with pytest.raises(ValueError, match="items_per_positive"):
        RankDiscrepancySampler(csr, 5, items_per_positive=0)


_MEMORY_PROBE = """
import resource, sys
import numpy as np, scipy.sparse as sp, torch
from recbole_kd.rank_discrepancy import RankDiscrepancySampler
torch.set_num_threads(1)  # one thread is faster on a busy machine, and its peak is steadier
n_users, n_items, chunk = {n_users}, {n_items}, {chunk}
rng = np.random.default_rng(0)
rows, cols = rng.integers(1, n_users, 20 * n_users), rng.integers(1, n_items, 20 * n_users)
csr = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, n_items))
gen = torch.Generator().manual_seed(0)
u_t, v_t = torch.randn(n_users, 16, generator=gen), torch.randn(n_items, 16, generator=gen)
u_s, v_s = torch.randn(n_users, 4, generator=gen), torch.randn(n_items, 4, generator=gen)
sampler = RankDiscrepancySampler(csr, n_items, chunk_size=chunk)
with open("/proc/self/statm") as statm:
    rss_before = int(statm.read().split()[1]) * resource.getpagesize()
sampler.refresh(lambda u: u_t[u] @ v_t.T, lambda u: u_s[u] @ v_s.T, epochs=10)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
print(peak - rss_before, sampler.pool_student.numel())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and ru_maxrss")
def test_bd_refresh_memory_is_bounded_by_the_chunk() -> None:
    n_users, n_items, chunk = 5_000, 20_000, 128
    root = str(Path(__file__).parents[1])  # the fresh process imports this checkout
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    code = _MEMORY_PROBE.format(n_users=n_users, n_items=n_items, chunk=chunk)
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    growth, draws = map(int, result.stdout.split())
    # Chunk temporaries (scores, sort keys and indices, ranks, weights: < 64 bytes per entry), the
    # two int32 pools plus the int64 draws of a chunk, and 64 MiB of allocator slack.
    bound = 64 * chunk * n_items + 16 * draws + 64 * 2**20
    assert bound < n_users * n_items * 4  # under one dense float32 users x items matrix
    assert growth < bound, (growth, bound)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_samplers_run_on_cuda() -> None:
    sampler, scores = _bd_setup(device="cuda")
    scores = {name: value.cuda() for name, value in scores.items()}
    _refresh(sampler, scores, epochs=5)
    student, teacher = sampler.next_items(torch.tensor([1, 2, 2, 3], device="cuda"))
    assert student.is_cuda and teacher.is_cuda and (student != 0).all()
    resumed, _ = _bd_setup(device="cuda", seed=1)
    resumed.load_state_dict(sampler.state_dict())
    users = torch.tensor([3, 1, 1], device="cuda")
    assert torch.equal(resumed.next_items(users)[1], sampler.next_items(users)[1])
    csr = _random_positives(30, 25, most=4, seed=10)
    cuda_scores = torch.randn(30, 25, device="cuda")
    top = teacher_top_n(lambda u: cuda_scores[u], csr, 8, 7, "cuda")
    rrd = RelaxedRankingSampler(top, csr, 25, 4, 5, seed=0, chunk_size=7)
    interesting, uninteresting = rrd.sample()
    assert interesting.is_cuda and (_positions(top, interesting).diff(dim=1) > 0).all()
    assert (uninteresting != 0).all()
