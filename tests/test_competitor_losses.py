"""Pure losses, weights and draws of RD, CD, DCD and HTD against hand computations and
line-by-line ports of the reference formulas (CPU, float64, no RecBole)."""

from __future__ import annotations

import math

import pytest
import torch

from recbole_kd.model.competitor_loss import (
    collaborative_distillation_loss,
    cosine_matrix,
    dual_correction_weights,
    group_prototypes,
    list_ranks,
    ranking_distillation_loss,
    rd_discrepancy_weights,
    rd_position_weights,
    renormalize_rows,
    topology_entity_loss,
    topology_group_entity_loss,
    topology_group_group_loss,
)
from recbole_kd.model.sampler.dual_correction import top_users_per_item, weighted_positions
from recbole_kd.model.sampler.positives import PositiveRows, make_generator
from recbole_kd.model.sampler.rank_distillation import tournament_positions, uniform_non_positives
from tests.sampling_helpers import check_frequencies, random_positives

D = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


# ---------------------------------------------------------------- RD


def test_rd_position_weights_by_hand() -> None:
    expected = [math.exp(-r) for r in (1, 2, 3)]
    expected = [w / sum(expected) for w in expected]
    got = rd_position_weights(3, 1.0, dtype=D)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=D), rtol=0, atol=1e-15)
    assert rd_position_weights(10, 1.0)[:3].tolist() == pytest.approx(
        [0.632, 0.233, 0.086], abs=1e-3
    )


def _reference_dynamic_weights(top, dynamic, n_items, mu, offset=0):
    """Port of distill_caser.py:294-305 (one column at a time), in Python floats."""
    weights = []
    for row_top, row_dyn in zip(top.tolist(), dynamic.tolist()):
        row = []
        for col, score in enumerate(row_top):
            num_smaller_than = sum(score < d for d in row_dyn)
            relative_rank = num_smaller_than / len(row_dyn)
            predicted_rank = math.floor((n_items - 1) * relative_rank) + offset
            row.append(max(math.tanh(mu * (predicted_rank - col)), 0.0))
        weights.append(row)
    return torch.tensor(weights, dtype=D)


@pytest.mark.parametrize("offset", [False, True])
def test_rd_discrepancy_weights_match_the_reference_loop(offset) -> None:
    top = torch.randn(6, 5, generator=_gen(1), dtype=D)
    dynamic = torch.randn(6, 7, generator=_gen(2), dtype=D)
    top[0] = 10.0  # no dynamic item beats the list: r_hat = 0
    got = rd_discrepancy_weights(top, dynamic, 50, 0.1, rank_offset=offset)
    expected = _reference_dynamic_weights(top, dynamic, 50, 0.1, int(offset))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    # The top item, unbeaten: weight 0 (authors) or tanh(mu) (KDs' +1).
    assert got[0, 0].item() == pytest.approx(math.tanh(0.1) if offset else 0.0, abs=1e-15)


def test_rd_loss_by_hand_and_renormalisation() -> None:
    scores = torch.tensor([[2.0, -1.0, -800.0]], dtype=D, requires_grad=True)
    weights = torch.tensor([[0.5, 0.3, 0.2]], dtype=D)
    loss = ranking_distillation_loss(scores, weights)
    expected = -(0.5 * math.log(_sigmoid(2.0)) + 0.3 * math.log(_sigmoid(-1.0))) + 0.2 * 800.0
    assert loss.item() == pytest.approx(expected, rel=1e-12)  # log-sigmoid stays finite
    loss.sum().backward()
    assert torch.isfinite(scores.grad).all()
    rows = renormalize_rows(torch.tensor([[1.0, 3.0], [0.0, 0.0]], dtype=D))
    assert rows.tolist() == [[0.25, 0.75], [0.0, 0.0]]


# ---------------------------------------------------------------- CD


def test_cd_loss_matches_the_kds_formula() -> None:
    student = torch.randn(4, 3, generator=_gen(3), dtype=D)
    teacher = torch.randn(4, 3, generator=_gen(4), dtype=D) * 3
    got = collaborative_distillation_loss(student, teacher, temperature=2.0, shift=0.5)
    expected = []
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        total = 0.0
        for s, t in zip(s_row, t_row):
            q, p = _sigmoid((t + 0.5) / 2.0), _sigmoid(s)
            total -= q * math.log(p + 1e-10) + (1 - q) * math.log(1 - p + 1e-10)
        expected.append(total)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=D), rtol=1e-8, atol=1e-8)


def test_cd_loss_sends_no_gradient_to_the_teacher_scores() -> None:
    student = torch.randn(2, 3, dtype=D, requires_grad=True)
    teacher = torch.randn(2, 3, dtype=D, requires_grad=True)
    collaborative_distillation_loss(student, teacher, 2.0, 0.0).sum().backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0


def test_tournament_positions_follow_the_min_of_two_draws() -> None:
    n_list, temperature, rows, n = 6, 0.05, 4000, 5
    positions = tournament_positions(rows, n_list, n, temperature, _gen(5), "cpu", chunk_size=999)
    assert positions.shape == (rows, n)
    ranks = torch.arange(1, n_list + 1, dtype=D)
    p = torch.exp(-ranks / (n_list * temperature))
    p = p / p.sum()
    at_least = p.flip(0).cumsum(0).flip(0)  # P(X >= r)
    tail_next = torch.cat([at_least[1:], torch.zeros(1, dtype=D)])
    expected = at_least**2 - tail_next**2  # P(min(X1, X2) = r)
    counts = torch.bincount(positions.reshape(-1), minlength=n_list)
    check_frequencies(counts, positions.numel(), expected)


# ---------------------------------------------------------------- DCD


def test_dual_correction_weights_by_hand() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, -1.0]])
    ranks = list_ranks(scores)
    assert ranks.tolist() == [[2, 0, 1, 3]]
    under, over = dual_correction_weights(ranks, 0.5)
    # rho_S - rho_T = [2, -1, -1, 0]
    torch.testing.assert_close(under, torch.tensor([[math.tanh(1.0), 0, 0, 0]]))
    torch.testing.assert_close(over, torch.tensor([[0, math.tanh(0.5), math.tanh(0.5), 0]]))


def test_weighted_positions_draw_without_replacement_and_refuse_zero_rows() -> None:
    weights = torch.tensor([[0.5, 0.2, 0.0, 0.0, 0.3, 0.0]]).repeat(20000, 1)
    first = weighted_positions(weights, 2, _gen(6))
    assert (first[:, 0] != first[:, 1]).all()
    check_frequencies(
        torch.bincount(first[:, 0], minlength=6), len(first), weights[0] / weights[0].sum()
    )
    with pytest.raises(RuntimeError):
        weighted_positions(torch.zeros(2, 4), 2, _gen(7))


def test_weighted_positions_of_positive_weights_follow_successive_draws() -> None:
    """Ordered pairs with the probabilities of two successive draws without replacement,
    w_i * w_j / (1 - w_i)."""
    w = torch.tensor([0.4, 0.3, 0.2, 0.1])
    draws = weighted_positions(w.repeat(40000, 1), 2, _gen(9))
    assert (draws[:, 0] != draws[:, 1]).all()
    pairs = torch.bincount(draws[:, 0] * 4 + draws[:, 1], minlength=16)
    exact = torch.tensor([0.0 if i == j else float(w[i] * w[j] / (1 - w[i]))
                          for i in range(4) for j in range(4)])
    check_frequencies(pairs, len(draws), exact)
    # The same generator state gives the same draws (checkpoints restore it).
    assert torch.equal(weighted_positions(w.repeat(5, 1), 3, _gen(10)),
                       weighted_positions(w.repeat(5, 1), 3, _gen(10)))


def test_top_users_per_item_matches_a_slow_reference() -> None:
    n_users, n_items, n = 11, 7, 3
    csr = random_positives(n_users, n_items, most=2, seed=8)
    scores = torch.randn(n_users, n_items, generator=_gen(8))
    scores[0] += 100.0  # padding user: must never be listed
    dense = csr.toarray() != 0
    expected = [
        sorted(
            [u for u in range(1, n_users) if not dense[u, i]], key=lambda u: -scores[u, i].item()
        )[:n]
        for i in range(1, n_items)
    ]
    for chunk in (1, 4, 100):
        got = top_users_per_item(lambda u: scores[u], csr, n, chunk, "cpu")
        assert got[1:].tolist() == expected


# ---------------------------------------------------------------- RD's dynamic items


def test_uniform_non_positives_is_uniform_over_the_free_items() -> None:
    n_users, n_items = 6, 9
    csr = random_positives(n_users, n_items, most=5, seed=9)
    positives = PositiveRows(csr, "cpu")
    users = torch.tensor([1, 2, 3, 4, 5])
    draws = uniform_non_positives(positives, users, 20000, make_generator(0, "cpu"))
    dense = torch.from_numpy(csr.toarray() != 0)
    for row, user in enumerate(users.tolist()):
        free = ~dense[user]
        free[0] = False
        expected = free.double() / free.sum()
        counts = torch.bincount(draws[row], minlength=n_items)
        assert counts[~free].sum() == 0
        check_frequencies(counts, draws.shape[1], expected)


def test_uniform_non_positives_takes_the_rank_th_free_item_of_each_user() -> None:
    n_users, n_items = 7, 12
    csr = random_positives(n_users, n_items, most=6, seed=3)
    positives = PositiveRows(csr, "cpu")
    users = torch.tensor([0, 3, 1, 3, 6, 2])  # user 0 (padding) has no positives
    draws = uniform_non_positives(positives, users, 50, make_generator(5, "cpu"))
    uniform = torch.rand((len(users), 50), dtype=torch.float64, generator=make_generator(5, "cpu"))
    dense = csr.toarray() != 0
    for row, user in enumerate(users.tolist()):
        free = [item for item in range(1, n_items) if not dense[user, item]]
        expected = [free[int(u * len(free))] for u in uniform[row].tolist()]
        assert draws[row].tolist() == expected, user


# ---------------------------------------------------------------- HTD


def test_group_prototypes_by_hand() -> None:
    vectors = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]], dtype=D)
    protos, present = group_prototypes(vectors, torch.tensor([3, 0, 3]), 5)
    assert present.tolist() == [0, 3]
    assert protos.tolist() == [[3.0, 2.0], [3.0, 2.5]]


def _entities(seed: int):
    student = torch.randn(7, 3, generator=_gen(seed), dtype=D)
    teacher = torch.randn(7, 5, generator=_gen(seed + 1), dtype=D)
    groups = torch.tensor([0, 1, 0, 0, 2, 1, 2])
    return student, teacher, groups


@pytest.mark.parametrize("positive_only", [True, False])
def test_topology_entity_loss_matches_the_reference_double_loop(positive_only) -> None:
    student, teacher, groups = _entities(10)
    s, t, g = student.tolist(), teacher.tolist(), groups.tolist()
    expected = []
    for a in range(7):
        total = 0.0
        for b in range(7):
            if g[a] == g[b] and (_cos(t[a], t[b]) > 0 or not positive_only):
                total += (_cos(s[a], s[b]) - _cos(t[a], t[b])) ** 2
        expected.append(total)
    got = topology_entity_loss(student, teacher, groups, teacher_positive_only=positive_only)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=D), rtol=0, atol=1e-12)


def test_topology_group_losses_match_the_reference_loops() -> None:
    student, teacher, groups = _entities(12)
    ps, _ = group_prototypes(student, groups, 3)
    pt, _ = group_prototypes(teacher, groups, 3)
    s, t, ps_l, pt_l = student.tolist(), teacher.tolist(), ps.tolist(), pt.tolist()
    pe = [sum((_cos(ps_l[k], s[e]) - _cos(pt_l[k], t[e])) ** 2 for e in range(7)) for k in range(3)]
    pp = [
        sum((_cos(ps_l[k], ps_l[h]) - _cos(pt_l[k], pt_l[h])) ** 2 for h in range(3))
        for k in range(3)
    ]
    got_pe = topology_group_entity_loss(ps, pt, student, teacher)
    got_pp = topology_group_group_loss(ps, pt)
    torch.testing.assert_close(got_pe, torch.tensor(pe, dtype=D), rtol=0, atol=1e-12)
    torch.testing.assert_close(got_pp, torch.tensor(pp, dtype=D), rtol=0, atol=1e-12)


def test_cosine_matrix_is_finite_for_zero_vectors() -> None:
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]], requires_grad=True)
    cosine_matrix(a, a).sum().backward()
    assert torch.isfinite(a.grad).all()
