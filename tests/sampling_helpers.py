"""Small synthetic positives and frequency checks shared by the sampler tests."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

SIGMAS = 5.0  # tolerance of every frequency check, in binomial standard deviations


def random_positives(n_users: int, n_items: int, most: int, seed: int) -> sp.csr_matrix:
    """1..most distinct positives among items 1..n_items-1 for every user but padding user 0."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for user in range(1, n_users):
        items = rng.choice(np.arange(1, n_items), size=rng.integers(1, most + 1), replace=False)
        rows += [user] * len(items)
        cols += items.tolist()
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, n_items))


def same_rows(n_users: int, n_items: int, items: list[int]) -> sp.csr_matrix:
    """The same positives ``items`` for every user (padding user 0 included)."""
    dense = np.zeros((n_users, n_items))
    dense[:, items] = 1.0
    return sp.csr_matrix(dense)


def check_frequencies(counts: torch.Tensor, n: int, probs: torch.Tensor) -> torch.Tensor:
    """Asserts |counts / n - probs| <= SIGMAS binomial sd, entry-wise; returns the tolerances."""
    probs = probs.double()
    tol = SIGMAS * torch.sqrt(probs * (1 - probs) / n) + 1e-12
    freq = counts.double() / n
    assert ((freq - probs).abs() <= tol).all(), (freq, probs, tol)
    return tol


def list_positions(top: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Index of each of ``items`` [U, K] in its row of ``top`` [U, N]; -1 when absent."""
    hits = top[:, None, :] == items[:, :, None]
    return torch.where(hits.any(-1), hits.int().argmax(-1), -1)


# ---------------------------------------------------------------- positives mask and top-N

