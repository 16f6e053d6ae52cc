"""One adapter over any RecBole general model, as teacher or student.

Distillation needs three things of a model: its own training loss on (user, positive, negative)
triples, its scores for users x item lists, and (for DE) its user and item representations.

Representations, by model:
- BPR (and models scoring by an inner product of ``user_embedding`` / ``item_embedding``): the
  embeddings.
- LightGCN: the propagated embeddings (mean over layers), the vectors its scores are made from.
- NeuMF: the concatenation [GMF embedding ; MLP embedding] of the user or item.
Other general models work for ranking distillation (RRD, BD, RD, CD, DCD) through ``predict``;
DE and HTD need one of the above and say so otherwise.

User-row models (CDAE) score a user's whole item row from one forward of the user's training
row: their scores here are the logits of one forward per unique user of a batch (never
``predict``, which returns probabilities and builds a row per (user, item) pair), their own loss
runs on the batch's unique users, and they have no representations.
"""

from __future__ import annotations

import torch
from recbole.data.interaction import Interaction
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.general_recommender import BPR
from recbole.utils import InputType, ModelType
from torch import Tensor

from recbole_kd.errors import BackboneError
from recbole_kd.kernels.list_scores import list_scores
from recbole_kd.model.row_loss import row_loss_and_logits

# How scores and representations are read from a model, by class name; others are "generic".
_KINDS = {"BPR": "embedding", "LightGCN": "propagated", "NeuMF": "neumf", "CDAE": "row"}
# Kinds whose scores are inner products of a user table's and an item table's rows.
_TABLE_KINDS = ("embedding", "propagated")
# Kinds with user and item representations (DE, HTD).
_REPRESENTATION_KINDS = ("embedding", "propagated", "neumf")
# Methods that distil through scores alone, which user-row models support.
SCORE_METHODS = ("RRD", "BD", "RD", "CD", "DCD")


def is_row_model(model_name: str | None) -> bool:
    """Whether RecBole model ``model_name`` scores whole user rows from one forward (CDAE)."""
    return _KINDS.get(model_name) == "row"


def check_general_model(model_class: type, role: str) -> None:
    """Fail early, naming the role, for models a KD method cannot train with its triples."""
    name = model_class.__name__
    if not issubclass(model_class, GeneralRecommender) or model_class.type != ModelType.GENERAL:
        raise BackboneError(
            f"{role} model '{name}' is not a RecBole general recommender trained by gradient "
            "descent; recbole_kd distils general (user-item) models such as BPR, LightGCN or NeuMF."
        )
    if getattr(model_class, "input_type", None) not in (InputType.PAIRWISE, InputType.POINTWISE):
        raise BackboneError(
            f"{role} model '{name}' is trained on whole user rows, not (user, item) pairs; "
            "choose a pairwise or pointwise model such as BPR, LightGCN or NeuMF."
        )


def check_representations(model_class: type, role: str) -> None:
    """DE and HTD need user and item vectors, defined for the models of the representation
    kinds."""
    name = model_class.__name__
    if _KINDS.get(name) not in _REPRESENTATION_KINDS:
        with_vectors = [model for model, kind in _KINDS.items() if kind in _REPRESENTATION_KINDS]
        row = " is a user-row model and" if _KINDS.get(name) == "row" else ""
        raise BackboneError(
            f"DE needs user and item representations, which recbole_kd defines for "
            f"{', '.join(with_vectors)}; the {role} model '{name}'{row} has none. Use "
            f"{', '.join(SCORE_METHODS)} with this model (they distil through scores), or "
            "another model."
        )


def clear_caches(model: torch.nn.Module) -> None:
    """Drop cached all-user/all-item tensors (LightGCN's restore_*) after weights change, of
    ``model`` and the models inside it (an ensemble's teachers)."""
    for module in model.modules():
        for name in getattr(module, "other_parameter_name", None) or []:
            setattr(module, name, None)


class Backbone:
    """Scores, representations and base loss of one RecBole general model."""

    def __init__(self, model: GeneralRecommender):
        self.model = model
        self.name = type(model).__name__
        self.kind = _KINDS.get(self.name, "generic")

    # ----- training loss -------------------------------------------------------------------
    def base_loss(self, user: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        """The model's own loss on the triples, in the batch format its input type expects; a
        user-row model's on the batch's unique users (its loss reads whole rows)."""
        m = self.model
        if self.kind == "row":
            batch = {m.USER_ID: user.unique()}
        elif m.input_type == InputType.PAIRWISE:
            batch = {m.USER_ID: user, m.ITEM_ID: pos, m.NEG_ITEM_ID: neg}
        else:
            label_field = m.LABEL if hasattr(m, "LABEL") else "label"
            batch = {
                m.USER_ID: torch.cat([user, user]),
                m.ITEM_ID: torch.cat([pos, neg]),
                label_field: torch.cat([torch.ones_like(user), torch.zeros_like(user)]).float(),
            }
        loss = m.calculate_loss(Interaction(batch))
        return sum(loss) if isinstance(loss, tuple) else loss

    def base_loss_and_scores(
        self, user: Tensor, pos: Tensor, neg: Tensor, items: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``base_loss(user, pos, neg)`` and ``score(user, items)``, both differentiable.

        For RecBole's BPR both come from one :meth:`score` over [pos, neg, items]: its loss
        is BPRLoss on the same inner products, and its embedding layers would otherwise give one
        dense gradient of the whole item table per lookup (pos, neg, then the distillation
        items), each zero-filled and summed; here the item table gets one.
        """
        if type(self.model) is not BPR:
            return self.base_loss(user, pos, neg), self.score(user, items)
        scores = self.score(user, torch.cat([pos.unsqueeze(1), neg.unsqueeze(1), items], dim=1))
        return self.model.loss(scores[:, 0], scores[:, 1]), scores[:, 2:]

    # ----- representations ----------------------------------------------------------------
    def representations(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """User vectors [len(users), d] and item vectors [len(items), d], differentiable."""
        m = self.model
        # Rows taken with index_select: unlike plain indexing's accumulating index_put, its
        # backward is deterministic with several CPU threads.
        if self.kind in _TABLE_KINDS:
            user_table, item_table = self._tables()
            return user_table.index_select(0, users), item_table.index_select(0, items)
        if self.kind == "neumf":
            return (
                torch.cat([m.user_mf_embedding(users), m.user_mlp_embedding(users)], dim=-1),
                torch.cat([m.item_mf_embedding(items), m.item_mlp_embedding(items)], dim=-1),
            )
        check_representations(type(m), "")
        raise AssertionError("unreachable: every kind in _KINDS has representations")

    def _tables(self) -> tuple[Tensor, Tensor]:
        """All users' and all items' vectors of a model whose scores are their inner products."""
        m = self.model
        if self.kind == "embedding":
            return m.user_embedding.weight, m.item_embedding.weight
        return m.forward()  # "propagated": LightGCN-style propagation over the whole graph

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def representation_dim(self) -> int:
        """Size of the vectors ``representations`` returns."""
        one = torch.ones(1, dtype=torch.long, device=self.device)
        with torch.no_grad():
            return self.representations(one, one)[0].shape[-1]

    # ----- scores -------------------------------------------------------------------------
    def score(self, users: Tensor, items: Tensor) -> Tensor:
        """Scores (logits) of ``items`` [B, n] for ``users`` [B]: [B, n], differentiable."""
        m = self.model
        if self.kind in _TABLE_KINDS:
            user_table, item_table = self._tables()
            return list_scores(user_table.index_select(0, users), item_table, items)
        if self.kind == "row":
            unique, row = users.unique(return_inverse=True)
            return self.row_logits(unique)[row.unsqueeze(1), items]
        flat_users = users.unsqueeze(1).expand_as(items).reshape(-1)
        if self.kind == "neumf":
            return m.forward(flat_users, items.reshape(-1)).view(items.shape)
        batch = Interaction({m.USER_ID: flat_users, m.ITEM_ID: items.reshape(-1)})
        return m.predict(batch).view(items.shape)

    def user_list_scores(self, users: Tensor, items: Tensor) -> Tensor:
        """Scores of the users ``users`` [I, N] for the item of their row ``items`` [I]: [I, N],
        differentiable (DCD ranks users per item)."""
        flat_items = items.unsqueeze(1).expand_as(users).reshape(-1, 1)
        return self.score(users.reshape(-1), flat_items).view(users.shape)

    def row_logits(self, users: Tensor) -> Tensor:
        """A user-row model's logits of every item for distinct ``users``: one forward of their
        training rows, [len(users), n_items], differentiable."""
        m = self.model
        return m.forward(m.get_rating_matrix(users), users)

    def row_loss_and_logits(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """A user-row model's own loss of distinct ``users`` and its logits of every item, both
        from one forward of their training rows (differentiable)."""
        return row_loss_and_logits(self.model, users)

    @torch.no_grad()
    def evaluation_scores(self, users: Tensor) -> Tensor:
        """What RecBole's full-sort evaluation ranks: the model's own ``full_sort_predict``
        (a user-row model's probabilities, exactly as stock RecBole evaluates it)."""
        if self.kind == "row":
            return self.model.full_sort_predict(Interaction({self.model.USER_ID: users}))
        return self.all_item_scores(users)

    @torch.no_grad()
    def all_item_scores(self, users: Tensor) -> Tensor:
        """Scores (logits) of every item for ``users``: [len(users), n_items], no gradient."""
        m = self.model
        if self.kind == "embedding":
            return m.user_embedding(users) @ m.item_embedding.weight.T
        if self.kind == "row":  # logits, not the probabilities that tie once saturated
            return self.row_logits(users)
        try:
            # LightGCN and others cache their propagated embeddings here between calls.
            return m.full_sort_predict(Interaction({m.USER_ID: users})).view(len(users), -1)
        except NotImplementedError:
            pass
        items = torch.arange(m.n_items, device=users.device).expand(len(users), -1)
        return self.score(users, items)
