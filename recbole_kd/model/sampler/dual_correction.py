"""DCD's draws: each item's teacher top-N users, and list positions drawn by weight.

Conventions as in :mod:`recbole_kd.model.sampler.positives`: user 0 and item 0 are padding and
never drawn nor listed; every draw goes through a ``torch.Generator`` owned by the distiller.
"""

from __future__ import annotations

import scipy.sparse as sp
import torch
from torch import Tensor

from recbole_kd.model.sampler.positives import PositiveRows, ScoreFn, fill_cells, user_chunks


def weighted_positions(weights: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` positions per row drawn without replacement with probability ~ ``weights``
    (``torch.multinomial``, as DCD's reference: a row of zeros raises, a row with fewer than
    ``n`` non-zero weights is filled up with zero-weight positions).

    Returns:
        LongTensor [rows, n], in draw order.
    """
    return torch.multinomial(weights, n, replacement=False, generator=generator)


@torch.no_grad()
def top_users_per_item(
    score_fn: ScoreFn,
    positives_csr: sp.spmatrix,
    n: int,
    chunk_size: int,
    device: torch.device | str,
) -> Tensor:
    """Each item's top-n users by teacher score, its training users and user 0 excluded: a
    running top-n over chunks of users, memory O(n_items x (n + chunk_size)).

    Returns:
        LongTensor [n_items, n]: user ids, column 0 the item's highest-scoring user. Row 0
        (padding item) is meaningless.
    """
    device = torch.device(device)
    positives = PositiveRows(positives_csr, device)
    n_users, n_items = positives.shape
    best_scores = torch.full((n_items, n), float("-inf"), device=device)
    best_users = torch.zeros((n_items, n), dtype=torch.long, device=device)
    for users in user_chunks(n_users, chunk_size, device):
        scores = torch.as_tensor(score_fn(users), device=device).float()
        scores = fill_cells(scores, positives.cells(users, padding=False), float("-inf"))
        if users[0] == 0:
            scores[0] = float("-inf")
        merged_scores = torch.cat([best_scores, scores.T], dim=1)
        merged_users = torch.cat([best_users, users.expand(n_items, -1)], dim=1)
        best_scores, chosen = merged_scores.topk(n, dim=1)
        best_users = merged_users.gather(1, chosen)
    return best_users


def candidates_per_item(positives_csr: sp.spmatrix) -> int:
    """Fewest users any real item can list: n_users - 1 - max training users of an item."""
    csr = sp.csr_matrix(positives_csr)
    degree = (csr[:, 1:] != 0).sum(axis=0)
    return int(csr.shape[0] - 1 - (degree.max() if degree.size else 0))
