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
"""

from __future__ import annotations

from functools import partial

import torch
from recbole.model.general_recommender import CDAE
from torch import Tensor
from torch.nn import functional as F

from recbole_kd.errors import KDConfigError

KEY = "cdae_negatives"


def sampled_negatives(rows: Tensor, ratio: int, generator: torch.Generator | None = None) -> Tensor:
    """For users' training rows ``rows`` [U, n_items] (> 0 where interacted; column 0 is the
    padding item), a mask [U, n_items] of ``ratio`` × |I_u| items per user drawn uniformly with
    replacement from the items the user has not interacted with (duplicates marked once)."""
    free = rows <= 0
    free[:, 0] = False  # the padding item is never an item
    n_free = free.sum(dim=1)
    counts = torch.where(n_free > 0, ratio * (rows > 0).sum(dim=1), 0)
    mask = torch.zeros_like(rows, dtype=torch.bool)
    total = int(counts.sum())
    if total == 0:
        return mask
    owner = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), counts)
    # Each draw is the r-th free item of its row, r uniform over the row's free items. The rows'
    # running counts of free items, laid end to end, are one sorted sequence: the draw is where
    # its row's offset + r + 1 is first reached.
    offsets = torch.cumsum(n_free, dim=0) - n_free
    running = (torch.cumsum(free, dim=1) + offsets.unsqueeze(1)).reshape(-1)
    uniform = torch.rand(total, dtype=torch.float64, device=rows.device, generator=generator)
    r = torch.minimum((uniform * n_free[owner]).long(), n_free[owner] - 1)
    position = torch.searchsorted(running, offsets[owner] + r + 1)
    mask[owner, position % rows.shape[1]] = True
    return mask


def own_row_loss(model: CDAE, rows: Tensor, logits: Tensor) -> Tensor:
    """CDAE's own loss of the users with training rows ``rows`` from their ``logits`` (one
    forward): over the training items and sampled negatives when the model was given
    ``cdae_negatives``, else RecBole's ``CDAE.calculate_loss`` over the whole row."""
    ratio = getattr(model, KEY, None)
    if ratio is not None:
        mask = (rows > 0) | sampled_negatives(rows, ratio)
        loss = F.binary_cross_entropy_with_logits(logits[mask], rows[mask], reduction="sum")
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
    logits = model.forward(rows, users)
    return own_row_loss(model, rows, logits), logits


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
