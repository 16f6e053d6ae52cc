"""Vectorised draws of RD (dynamic items) and CD (rank-aware tournament), and the list length
every user allows.

Conventions as in :mod:`recbole_kd.model.sampler.positives`: user 0 and item 0 are padding and
never drawn nor listed; every draw goes through a ``torch.Generator`` owned by the distiller.
"""

from __future__ import annotations

import scipy.sparse as sp
import torch
from torch import Tensor

from recbole_kd.model.sampler.positives import PositiveRows, user_chunks


def uniform_non_positives(
    positives: PositiveRows, users: Tensor, n: int, generator: torch.Generator
) -> Tensor:
    """``n`` items per user, uniform WITH replacement over the items 1..n_items-1 that are not
    the user's training positives (RD's dynamic items), exactly and without rejection.

    The r-th (0-based) free item of a user with sorted positives p_0 < p_1 < ... is
    r + 1 + #{k : p_k - 1 - k <= r}, since p_k - 1 - k free items lie below p_k; the count is
    one search in ``positives.free_below``, the users' keyed and sorted p_k - 1 - k.

    Returns:
        LongTensor [len(users), n].
    """
    n_items = positives.shape[1]
    n_free = n_items - 1 - positives.counts[users]
    if len(users) and int(n_free.min()) < 1:
        raise ValueError("a user has no item outside its training positives to draw")
    uniform = torch.rand(
        (len(users), n), dtype=torch.float64, device=users.device, generator=generator
    )
    rank = torch.minimum((uniform * n_free.unsqueeze(1)).long(), (n_free - 1).unsqueeze(1))
    below = torch.searchsorted(positives.free_below, (users * n_items).unsqueeze(1) + rank,
                               right=True) - positives.indptr[users].unsqueeze(1)
    return rank + 1 + below


def tournament_positions(
    n_rows: int,
    list_len: int,
    n: int,
    temperature: float,
    generator: torch.Generator,
    device: torch.device | str,
    chunk_size: int = 1024,
) -> Tensor:
    """CD's rank-aware draw: for each of ``n`` rounds, two positions r in 1..N i.i.d. with
    p(r) ~ exp(-r / (N T)), keeping the better-ranked (smaller) one.

    Returns:
        LongTensor [n_rows, n] of 0-based list positions.
    """
    ranks = torch.arange(1, list_len + 1, dtype=torch.float64, device=device)
    weights = torch.exp(-ranks / (list_len * temperature))
    out = torch.empty((n_rows, n), dtype=torch.long, device=device)
    for rows in user_chunks(n_rows, chunk_size, torch.device(device)):
        draws = torch.multinomial(
            weights.expand(len(rows), -1), 2 * n, replacement=True, generator=generator
        )
        out[rows] = draws.view(len(rows), n, 2).min(dim=-1).values
    return out


def candidates_per_user(positives_csr: sp.spmatrix) -> int:
    """Fewest items any user can list: n_items - 1 - max training positives of a user."""
    csr = sp.csr_matrix(positives_csr)
    degree = (csr != 0).sum(axis=1)
    return int(csr.shape[1] - 1 - (degree.max() if degree.size else 0))
