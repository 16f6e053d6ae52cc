"""The synthetic data generator and stand-in score functions (``recbole_kd.tools.synthetic``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recbole_kd.tools.synthetic import (
    LowRankScores,
    popularity_bias,
    synthetic_interactions,
    write_atomic_inter,
)

N_USERS, N_ITEMS, MEAN, MINIMUM = 3_000, 1_000, 20.0, 5
FAILURE = 1e-9  # allowed chance that a sound probabilistic bound below is violated by luck


@pytest.fixture(scope="module")
def matrix() -> sp.csr_matrix:
    return synthetic_interactions(N_USERS, N_ITEMS, mean_activity=MEAN, min_activity=MINIMUM)


def test_layout_is_recboles_with_empty_padding(matrix: sp.csr_matrix) -> None:
    assert matrix.shape == (N_USERS + 1, N_ITEMS + 1)
    assert matrix.getrow(0).nnz == 0
    assert matrix.getcol(0).nnz == 0
    assert (matrix.data == 1).all()
    assert all(np.all(np.diff(row.indices) > 0) for row in matrix[1:50])  # sorted, distinct


def test_pairs_are_distinct(matrix: sp.csr_matrix) -> None:
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    keys = rows * matrix.shape[1] + matrix.indices
    assert len(np.unique(keys)) == matrix.nnz


def test_activity_respects_bounds_and_has_a_long_tail(matrix: sp.csr_matrix) -> None:
    activity = np.diff(matrix.indptr)[1:]
    assert activity.min() == MINIMUM
    assert activity.max() <= N_ITEMS // 10  # default cap
    # Lomax with tail index 2: the median sits far below the mean, and the cap is reached.
    assert np.median(activity) < 0.75 * activity.mean()
    assert activity.max() == N_ITEMS // 10
    assert abs(activity.mean() - MEAN) < 0.15 * MEAN  # the cap lowers the mean a little


def _expected_head_share_bound(activity: np.ndarray, n_items: int, head: int) -> float:
    """Lower bound on the expected share of interactions on the ``head`` most popular items.

    A user's k-th draw (k items taken, mass a of them in the head T) lands in T with probability
    (p_T - a) / (1 - a - b) >= (p_T - a) / (1 - a), b the mass taken outside T; this decreases in
    a, and a is at most c_k, the mass of the min(k, |T|) most popular items. Summing
    max(0, (p_T - c_k) / (1 - c_k)) over every user's draws bounds the expected count in T.
    """
    weights = 1.0 / np.arange(1, n_items + 1)  # Zipf exponent 1, by popularity rank
    weights /= weights.sum()
    p_head = weights[:head].sum()
    taken = np.concatenate([[0.0], np.cumsum(weights[:head])])  # c_k for k = 0..|T|
    per_draw = np.clip((p_head - taken) / (1 - taken), 0, None)
    per_draw = np.concatenate([per_draw, np.zeros(max(activity.max() - head, 0))])
    # Expected head draws of a user with m items: the sum of the first m per-draw bounds.
    first_m = np.concatenate([[0.0], np.cumsum(per_draw)])
    return first_m[activity].sum() / activity.sum()


def test_item_popularity_is_long_tailed(matrix: sp.csr_matrix) -> None:
    activity = np.diff(matrix.indptr)[1:]
    head = N_ITEMS // 10
    bound = _expected_head_share_bound(activity, N_ITEMS, head)
    # Head draws minus their conditional probabilities form a martingale with steps in [-1, 1]:
    # Azuma-Hoeffding puts the realised count below its bound by t with chance <= exp(-t^2/2N).
    n = matrix.nnz
    slack = math.sqrt(2 * n * math.log(1 / FAILURE)) / n
    counts = np.sort(np.asarray(matrix.sum(axis=0)).ravel())[::-1]
    share = counts[:head].sum() / n  # the busiest 10 % hold at least what the model's head holds
    assert bound - slack > 0.4  # the bound itself certifies a long tail
    assert share >= bound - slack, (share, bound, slack)


def test_same_seed_same_matrix_other_seed_other_matrix() -> None:
    first = synthetic_interactions(500, 300, mean_activity=10, seed=3)
    again = synthetic_interactions(500, 300, mean_activity=10, seed=3)
    other = synthetic_interactions(500, 300, mean_activity=10, seed=4)
    assert (first != again).nnz == 0
    assert (first != other).nnz > 0


def test_rejects_an_activity_the_items_cannot_hold() -> None:
    with pytest.raises(ValueError, match="max_activity"):
        synthetic_interactions(10, 20, mean_activity=10, max_activity=30)
    with pytest.raises(ValueError, match="minimum"):
        synthetic_interactions(10, 200, mean_activity=3, min_activity=5)


def test_inter_file_round_trips(tmp_path, matrix: sp.csr_matrix) -> None:
    path = write_atomic_inter(matrix, tmp_path / "synth" / "synth.inter")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "user_id:token\titem_id:token"
    pairs = np.array([line.split("\t") for line in lines[1:]], dtype=np.int64)
    back = sp.csr_matrix(
        (np.ones(len(pairs), dtype=np.float32), (pairs[:, 0], pairs[:, 1])), shape=matrix.shape
    )
    assert len(pairs) == matrix.nnz
    assert (back != matrix).nnz == 0


def test_low_rank_scores_are_chunk_independent_and_unit_scale(matrix: sp.csr_matrix) -> None:
    n_users, n_items = matrix.shape
    scores = LowRankScores(n_users, n_items, dim=16, seed=1, item_bias=popularity_bias(matrix))
    users = torch.arange(n_users)
    whole = scores(users)
    assert whole.shape == (n_users, n_items) and whole.dtype == torch.float32
    assert torch.equal(torch.cat([scores(chunk) for chunk in users.split(700)]), whole)
    no_bias = LowRankScores(n_users, n_items, dim=16, seed=1)(users)
    assert 0.9 < float(no_bias.std()) < 1.1
    # The bias favours popular items, so each user's mean score rises with item popularity.
    popularity = torch.as_tensor(np.asarray(matrix.sum(axis=0)).ravel())
    correlation = torch.corrcoef(torch.stack([whole.mean(dim=0), popularity.float()]))[0, 1]
    assert correlation > 0.5
    with pytest.raises(ValueError, match="item_bias"):
        LowRankScores(n_users, n_items, item_bias=np.zeros(n_items - 1))
