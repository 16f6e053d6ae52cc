"""CDAE's own loss with sampled negatives, as the BD authors' CDAE notebook trains it.

RecBole's CDAE sums a binary cross-entropy over every item of a user's row. The BD reference
notebook sums it over the user's training items and over ``cdae_negatives`` × |I_u| items drawn
uniformly, with replacement, from the items the user has not interacted with in training; an
item drawn twice counts once. (The notebook also leaves the user's validation and test items
out of the draw: that reads held-out data and is not reproduced.) The reduction is RecBole's
and the notebook's: a sum over the batch, plus RecBole's regularisation terms (``reg_weight_1``,
``reg_weight_2``; set both to 0 for the notebook, which uses the optimizer's weight decay).

``cdae_negatives`` is read from the config a model is built with, so it reaches every CDAE the
runner builds: models trained alone, the distilled student and BD's two models. The model stays
RecBole's CDAE: its checkpoints load in stock RecBole.

A row holds a few dozen non-zero entries among tens of thousands of items, so the training
forward and the loss work on those entries and on (row, item) pairs, never scanning whole rows:
the input dropout is drawn for the non-zero entries alone, and negatives by rejection. The
distributions are RecBole's and the notebook's (docs/performance.md, CDAE's training rows).
"""

from __future__ import annotations

from functools import partial

import torch
from recbole.model.general_recommender import CDAE
from torch import Tensor
from torch.nn import functional as F

from recbole_kd.errors import KDConfigError

KEY = "cdae_negatives"


#: Rounds of drawing uniformly among all items and rejecting the user's own before the rest of
#: the draws are made exactly; a round accepts a draw with the row's share of free items.
REJECTION_ROUNDS = 8


def sampled_negatives(rows: Tensor, ratio: int, generator: torch.Generator | None = None) -> Tensor:
    """For users' training rows ``rows`` [U, n_items] (> 0 where interacted; column 0 is the
    padding item), a mask [U, n_items] of ``ratio`` × |I_u| items per user drawn uniformly with
    replacement from the items the user has not interacted with (duplicates marked once)."""
    row, item = negative_pairs(rows > 0, ratio, generator)
    mask = torch.zeros_like(rows, dtype=torch.bool)
    mask[row, item] = True
    return mask


def negative_pairs(positive: Tensor, ratio: int,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """The (row, item) pairs of :func:`sampled_negatives`, each once, from the users' training
    rows as a boolean mask ``positive``."""
    n_cols = positive.shape[1]
    degree = positive.sum(dim=1)
    n_free = n_cols - 1 - degree + positive[:, 0]  # column 0 is never an item
    counts = torch.where(n_free > 0, ratio * degree, 0)
    owner = torch.repeat_interleave(torch.arange(len(positive), device=positive.device), counts)
    return distinct_pairs(owner, draw_free_items(positive, owner, generator), n_cols)


def distinct_pairs(row: Tensor, item: Tensor, n_cols: int) -> tuple[Tensor, Tensor]:
    """The distinct (row, item) pairs among ``row``, ``item``, in row-major order."""
    keys = (row * n_cols + item).unique()
    return keys // n_cols, keys % n_cols


def draw_free_items(positive: Tensor, owner: Tensor,
                    generator: torch.Generator | None = None) -> Tensor:
    """One item per entry of ``owner`` (a row of ``positive``), uniform over the items other
    than 0 that the row has not interacted with; every such row has at least one.

    A few rounds of rejection: draws among all items, the row's own items redrawn. A row holds
    a few dozen of tens of thousands of items, so nearly every draw is accepted in the first
    round; draws still pending after :data:`REJECTION_ROUNDS` (rows of mostly interacted items)
    are made exactly among the row's free items. Either way each draw is uniform over them.
    """
    items = torch.empty_like(owner)
    pending = torch.arange(len(owner), device=owner.device)
    for _ in range(REJECTION_ROUNDS):
        if len(pending) == 0:
            return items
        draw = torch.randint(1, positive.shape[1], (len(pending),), device=owner.device,
                             generator=generator)
        free = ~positive[owner[pending], draw]
        items[pending[free]] = draw[free]
        pending = pending[~free]
    items[pending] = _draw_free_items_exactly(positive, owner[pending], generator)
    return items


def _draw_free_items_exactly(positive: Tensor, owner: Tensor,
                             generator: torch.Generator | None = None) -> Tensor:
    """:func:`draw_free_items` by inverting each row's running count of free items."""
    if len(owner) == 0:
        return owner
    rows, owner = owner.unique(return_inverse=True)
    free = ~positive[rows]
    free[:, 0] = False  # the padding item is never an item
    n_free = free.sum(dim=1)
    # Each draw is the r-th free item of its row, r uniform over the row's free items. The rows'
    # running counts of free items, laid end to end, are one sorted sequence: the draw is where
    # its row's offset + r + 1 is first reached.
    offsets = torch.cumsum(n_free, dim=0) - n_free
    running = (torch.cumsum(free, dim=1) + offsets.unsqueeze(1)).reshape(-1)
    uniform = torch.rand(len(owner), dtype=torch.float64, device=owner.device,
                         generator=generator)
    r = torch.minimum((uniform * n_free[owner]).long(), n_free[owner] - 1)
    return torch.searchsorted(running, offsets[owner] + r + 1) % positive.shape[1]


def nonzero_entries(model: CDAE, users: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """The (row, item) pairs where ``rows`` = ``model.get_rating_matrix(users)`` is non-zero, in
    row-major order: found among the users' histories, which the rows are built from, rather
    than by scanning the rows' tens of thousands of items."""
    history = model.history_item_id[users]
    row, slot = (history > 0).nonzero(as_tuple=True)  # 0 pads the histories
    # A repeated interaction counts once.
    row, item = distinct_pairs(row, history[row, slot], rows.shape[1])
    nonzero = rows[row, item] != 0
    return row[nonzero], item[nonzero]


def input_dropout(rows: Tensor, p: float,
                  entries: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """``rows`` through CDAE's input dropout, drawn only where a row is non-zero (``entries``,
    the (row, item) pairs of its non-zero entries, found by scanning ``rows`` if not given).

    Dropout keeps an entry with probability 1 - p, scaled by 1 / (1 - p); a zero stays zero
    either way. Drawing for the few dozen non-zero entries of a row rather than for its tens of
    thousands of items gives the same distribution at a small part of the cost.
    """
    if p == 0:
        return rows
    if p >= 1:
        return torch.zeros_like(rows)
    row, item = rows.nonzero(as_tuple=True) if entries is None else entries
    keep = torch.rand(len(row), device=rows.device) >= p
    row, item = row[keep], item[keep]
    corrupted = torch.zeros_like(rows)
    corrupted[row, item] = rows[row, item] / (1 - p)
    return corrupted


def row_logits(model: CDAE, rows: Tensor, users: Tensor,
               entries: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """``CDAE.forward`` of RecBole 1.2.1 with its input dropout drawn by :func:`input_dropout`."""
    inputs = input_dropout(rows, model.dropout.p, entries) if model.training else rows
    return model.out_layer(model.h_act(model.h_item(inputs) + model.h_user(users)))


def own_row_loss(model: CDAE, rows: Tensor, logits: Tensor,
                 entries: tuple[Tensor, Tensor]) -> Tensor:
    """CDAE's own loss of the users with training rows ``rows`` (non-zero at ``entries``) from
    their ``logits`` (one forward): over the training items and sampled negatives when the
    model was given ``cdae_negatives``, else RecBole's ``CDAE.calculate_loss`` over the whole
    row."""
    ratio = getattr(model, KEY, None)
    if ratio is not None:
        row, item = entries
        values = rows[row, item]
        positive = values > 0
        row, item, values = row[positive], item[positive], values[positive]
        loss = F.binary_cross_entropy_with_logits(logits[row, item], values, reduction="sum")
        row, item = negative_pairs(rows > 0, ratio)
        negatives = logits[row, item]
        loss = loss + F.binary_cross_entropy_with_logits(negatives, torch.zeros_like(negatives),
                                                         reduction="sum")
    elif model.loss_type == "MSE":
        loss = F.mse_loss(model.o_act(logits), rows, reduction="sum")
    else:
        loss = F.binary_cross_entropy_with_logits(logits, rows, reduction="sum")
    loss = loss + model.reg_weight_1 * (model.h_user.weight.norm(p=1)
                                        + model.h_item.weight.norm(p=1))
    return loss + model.reg_weight_2 * (model.h_user.weight.norm() + model.h_item.weight.norm())


def row_loss_and_logits(model: CDAE, users: Tensor) -> tuple[Tensor, Tensor]:
    """The own loss of distinct ``users`` and their logits of every item, from one forward of
    their training rows."""
    rows = model.get_rating_matrix(users)
    entries = nonzero_entries(model, users, rows)
    logits = row_logits(model, rows, users, entries)
    return own_row_loss(model, rows, logits, entries), logits


def sampled_row_loss(model: CDAE, interaction) -> Tensor:
    """CDAE's loss over each user's training items and its sampled negatives (see the module)."""
    return row_loss_and_logits(model, interaction[model.USER_ID])[0]


def use_sampled_loss(model, config) -> None:
    """Give a CDAE built with ``cdae_negatives`` set the sampled loss; other models are left
    as they are."""
    ratio = config[KEY]  # checked with the config (key_checks.VALUE_RULES)
    if ratio is not None and isinstance(model, CDAE):
        if model.loss_type != "BCE":
            raise KDConfigError(f"Config key '{KEY}' needs CDAE's loss_type BCE, not "
                                f"{model.loss_type}: unset one of them.")
        setattr(model, KEY, ratio)
        model.calculate_loss = partial(sampled_row_loss, model)
