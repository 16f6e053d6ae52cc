"""BD's rank discrepancy-aware sampler: ranks, weights, draws, pools, memory."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recbole_kd.kernels import sort
from recbole_kd.kernels.sort import stable_row_order
from recbole_kd.model.sampler.rank_discrepancy import (
    RankDiscrepancySampler,
    discrepancy_weights,
    occurrence_index,
    ranks_from_scores,
)
from recbole_kd.model.sampler.relaxed_ranking import RelaxedRankingSampler, teacher_top_n
from tests.sampling_helpers import check_frequencies, list_positions, random_positives, same_rows


def cells(mask: torch.Tensor) -> torch.Tensor:
    """Flat positions row * I + item of a bool mask [C, I]'s True cells."""
    return mask.reshape(-1).nonzero().squeeze(1)


def test_ranks_follow_each_convention_and_skip_excluded_items() -> None:
    scores = torch.tensor([[9.0, 4.0, 3.0, 2.0, 1.0], [9.0, 1.0, 4.0, 2.0, 3.0]])
    excluded = cells(torch.arange(5).expand(2, 5) == 0)
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
    ranks = ranks_from_scores(scores, cells(excluded), convention)
    for row in range(5):
        eligible = torch.nonzero(~excluded[row]).flatten()
        order = eligible[scores[row, eligible].argsort(descending=convention == "paper")]
        assert ranks[row, order].tolist() == list(range(1, len(eligible) + 1))
        assert (ranks[row, excluded[row]] == 0).all()


@pytest.mark.parametrize("threads", [1, 2])
def test_radix_row_order_equals_a_stable_sort_across_blocks(monkeypatch, threads: int) -> None:
    # Few distinct keys (many ties) spanning both signs and both 16-bit halves; blocks of 3 rows
    # so that rows 0..9 are sorted in four blocks, by one thread or two.
    generator = torch.Generator().manual_seed(13)
    keys = torch.randint(-3, 3, (10, 500), generator=generator, dtype=torch.int32) * 40_000
    keys[0, :5] = torch.tensor([torch.iinfo(torch.int32).min, torch.iinfo(torch.int32).max, 0, -1, 1])
    monkeypatch.setattr(sort, "RADIX_BLOCK", 3 * 500)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        order = stable_row_order(keys)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(order, torch.sort(keys, dim=1, stable=True).indices)


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
    excluded = cells(torch.tensor([[True, False, False, False, False]]))
    rank_t, rank_s = (ranks_from_scores(s, excluded, convention) for s in (teacher, student))
    w_s, w_t = discrepancy_weights(rank_t, rank_s, eps_t=0.5, eps_s=0.5, excluded=excluded)
    torch.testing.assert_close(w_s, torch.tensor([to_student]), rtol=0, atol=1e-6)
    torch.testing.assert_close(w_t, torch.tensor([to_teacher]), rtol=0, atol=1e-6)


def test_discrepancy_weights_equal_the_formulas_evaluated_per_item() -> None:
    # The weights are read from tables over rank gaps -I..I: every gap, both signs, must give
    # exactly what evaluating the formulas on each item gives.
    n_items, generator = 2_000, torch.Generator().manual_seed(14)
    rank_t = torch.stack([torch.randperm(n_items, generator=generator) + 1 for _ in range(6)])
    rank_s = torch.stack([torch.randperm(n_items, generator=generator) + 1 for _ in range(6)])
    rank_s[0] = n_items + 1 - rank_t[0]  # reversed: gaps reach -(I - 1) and I - 1
    rank_t, rank_s = rank_t.int(), rank_s.int()
    w_s, w_t = discrepancy_weights(rank_t, rank_s, eps_t=0.01, eps_s=0.003)
    gap = (rank_s - rank_t).float()
    assert gap.min() == 1 - n_items and gap.max() == n_items - 1
    assert torch.equal(w_s, (0.01 * gap).clamp(min=0).tanh())
    exponent = -0.003 * gap
    assert torch.equal(w_t, (exponent - exponent.amax(dim=1, keepdim=True)).exp())


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
        tol = check_frequencies(counts, hi - lo, probs)
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
    check_frequencies(counts, hi - lo, probs)


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
    resumed, _ = _bd_setup()
    resumed.load_state_dict(state)
    for users in _batches(seed=9):
        for got, want in zip(resumed.next_items(users), sampler.next_items(users)):
            assert torch.equal(got, want)
    _refresh(sampler, scores, epochs=4)
    _refresh(resumed, scores, epochs=4)
    assert torch.equal(resumed.pool_student, sampler.pool_student)
    assert torch.equal(resumed.pool_teacher, sampler.pool_teacher)


@pytest.mark.parametrize("per_positive", [1, 2])
def test_bd_pools_hold_each_users_own_draws_for_any_needs(capsys, per_positive: int) -> None:
    # Needs 3 and 2 draws, or 6 and 4 (one multinomial call for both), eligible items {4, 5, 6}
    # and {1, 2, 3, 6}.
    csr = sp.csr_matrix(
        np.array([[0] * 7, [0, 1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1, 0]], dtype=float)
    )
    sampler = RankDiscrepancySampler(csr, 7, items_per_positive=per_positive, seed=3)
    first = 3 * per_positive
    gen = torch.Generator().manual_seed(3)
    teacher, student = torch.randn(3, 7, generator=gen), torch.randn(3, 7, generator=gen)
    for _ in range(20):
        sampler.refresh(lambda u: teacher[u], lambda u: student[u], epochs=1)
        assert sampler.offsets.tolist() == [0, 0, first, 5 * per_positive]
        for pool in (sampler.pool_student, sampler.pool_teacher):
            assert pool.dtype == torch.int32  # documented: int32 below 2^31 items
            assert set(pool[:first].tolist()) <= {4, 5, 6}
            assert set(pool[first:].tolist()) <= {1, 2, 3, 6}
    assert capsys.readouterr().err == ""  # no progress bar unless asked for


def test_bd_next_items_before_any_refresh_are_refused() -> None:
    sampler, _ = _bd_setup()
    with pytest.raises(ValueError, match="refresh"):
        sampler.next_items(torch.tensor([3, 1]))  # the last user among them


def test_bd_refresh_reports_its_wall_time() -> None:
    sampler, scores = _bd_setup()
    assert sampler.last_refresh_seconds == 0.0 and sampler.n_refreshes == 0  # no refresh yet
    start = time.perf_counter()
    _refresh(sampler, scores, epochs=2)
    assert 0.0 < sampler.last_refresh_seconds <= time.perf_counter() - start
    assert sampler.n_refreshes == 1
    with pytest.raises(ValueError, match="epochs"):
        _refresh(sampler, scores, epochs=0)


def test_bd_default_settings_are_the_papers() -> None:
    # eps_t = 1e-2, eps_s = 1e-4 and one item per positive, as in BD.yaml.
    sampler, scores = _bd_setup()
    default = RankDiscrepancySampler(_BD_POSITIVES, sampler.n_items, seed=5)
    explicit = RankDiscrepancySampler(
        _BD_POSITIVES, sampler.n_items, eps_t=1e-2, eps_s=1e-4, items_per_positive=1, seed=5
    )
    for each in (default, explicit):
        _refresh(each, scores, epochs=50)
    assert torch.equal(default.pool_student, explicit.pool_student)
    assert torch.equal(default.pool_teacher, explicit.pool_teacher)


def test_bd_users_without_positives_need_no_eligible_item() -> None:
    # A catalogue of padding alone: nothing to rank, nothing to draw, no error.
    sampler = RankDiscrepancySampler(sp.csr_matrix((3, 1)), 1)
    sampler.refresh(lambda u: torch.zeros(len(u), 1), lambda u: torch.zeros(len(u), 1), epochs=2)
    assert sampler.offsets.tolist() == [0, 0, 0, 0]
    assert len(sampler.pool_student) == len(sampler.pool_teacher) == 0


@pytest.mark.parametrize("n_items", [2, 4])
def test_bd_refuses_a_user_whose_every_item_is_a_positive(n_items: int) -> None:
    # The last user needs n_items - 1 draws per epoch (1 with n_items = 2) and can draw nothing.
    dense = np.zeros((3, n_items))
    dense[1, 1] = dense[2, 1:] = 1.0
    sampler = RankDiscrepancySampler(sp.csr_matrix(dense), n_items)
    scores = torch.randn(3, n_items, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="no eligible item"):
        sampler.refresh(lambda u: scores[u], lambda u: -scores[u], epochs=1)


def test_bd_sizes_follow_the_positives_matrix() -> None:
    # More users than items: pointers and offsets are per user.
    csr = random_positives(12, 5, most=2, seed=4)
    with pytest.raises(ValueError, match="positives have 5 columns, not 6"):
        RankDiscrepancySampler(csr, 6)
    with pytest.raises(ValueError, match="positives have 5 columns, not 4"):
        RankDiscrepancySampler(csr, 4)
    sampler = RankDiscrepancySampler(csr, 5)
    scores = torch.randn(12, 5, generator=torch.Generator().manual_seed(4))
    sampler.refresh(lambda u: scores[u], lambda u: -scores[u], epochs=1)
    users = torch.arange(1, 12)
    student, teacher = sampler.next_items(users)
    assert sampler.pointers.tolist() == [0] + [1] * 11
    positives = torch.from_numpy(csr.toarray() != 0)
    for items in (student, teacher):
        assert not positives[users, items].any() and (items != 0).all()


def test_bd_rejects_unknown_options() -> None:
    csr = same_rows(2, 5, [1])
    with pytest.raises(ValueError, match="convention"):
        RankDiscrepancySampler(csr, 5, convention="ascending")
    with pytest.raises(ValueError, match="positives_mode"):
        RankDiscrepancySampler(csr, 5, positives_mode="keep")
    with pytest.raises(ValueError, match="items_per_positive"):
        RankDiscrepancySampler(csr, 5, items_per_positive=0)


_MEMORY_PROBE = """
import resource, sys
import numpy as np, scipy.sparse as sp, torch
from recbole_kd.model.sampler.rank_discrepancy import RankDiscrepancySampler
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
# VmHWM, the peak of this program's own memory: ru_maxrss would carry over the pytest
# process's peak, which Linux keeps across fork and exec.
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) * 1024
print(peak - rss_before, sampler.pool_student.numel())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
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
    csr = random_positives(30, 25, most=4, seed=10)
    cuda_scores = torch.randn(30, 25, device="cuda")
    top = teacher_top_n(lambda u: cuda_scores[u], csr, 8, 7, "cuda")
    rrd = RelaxedRankingSampler(top, csr, 25, 4, 5, seed=0, chunk_size=7)
    interesting, uninteresting = rrd.sample()
    assert interesting.is_cuda and (list_positions(top, interesting).diff(dim=1) > 0).all()
    assert (uninteresting != 0).all()
