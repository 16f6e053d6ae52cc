"""One adapter over any RecBole sequential model, as teacher or student.

In a sequential run the unit that is scored is a *query*: a training row of RecBole's
``SequentialDataset`` (a prefix of a user's history, its length, the user, and the next item as
its target), identified by its position among the training rows. Distillation reads a query
exactly as the general :class:`~recbole_kd.model.backbone.Backbone` reads a user: its own loss
on (query, target, negative) triples, its scores for queries x item lists and for every item,
and (for DE and HTD) the query's representation and the items' vectors.

Models by kind:
- "sequence": models that score an item by the inner product of ``forward``'s sequence
  representation with the item's ``item_embedding`` row (SASRec, GRU4Rec, NARM, STAMP, Caser,
  and the other models of RecBole's with that ``full_sort_predict``). They have
  representations, and one step runs one forward per model: the own loss is the model's own
  ``calculate_loss`` given the step's sequence representation.
- "generic": any other sequential model (BERT4Rec, …) with a ``full_sort_predict``: scores are
  its ``full_sort_predict`` (exactly what RecBole evaluates), its own loss its
  ``calculate_loss``; no representations (DE and HTD refuse it).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from recbole.data.interaction import Interaction
from recbole.data.transform import construct_transform
from recbole.model.abstract_recommender import SequentialRecommender
from torch import Tensor

from recbole_kd.errors import BackboneError
from recbole_kd.kernels.list_scores import list_scores

# Models whose forward takes (item_seq, item_seq_len) and whose scores are inner products with
# item_embedding; Caser's forward takes (user, item_seq).
_SEQUENCE_MODELS = {"SASRec", "GRU4Rec", "NARM", "STAMP", "LightSANs", "Caser"}
_USER_FIRST = {"Caser"}
# Models that need more than an item sequence: features, a knowledge graph, or labels.
_REFUSED = {
    "SASRecF": "item features", "GRU4RecF": "item features", "FDSA": "item features",
    "S3Rec": "item attributes and a pre-training stage", "GRU4RecKG": "a knowledge graph",
    "KSR": "a knowledge graph", "DIN": "labelled (click-through) rows",
    "DIEN": "labelled (click-through) rows",
}
QUERY_FIELD = "kd_query"  # the training row's position, added to the training rows
NO_GRAD_ROWS = 2048  # rows encoded at once without gradients: RecBole's default batch


def is_sequential(model_class: type) -> bool:
    """Whether ``model_class`` is one of RecBole's sequential recommenders."""
    return issubclass(model_class, SequentialRecommender)


def check_sequential_model(model_class: type, role: str) -> None:
    """Refuse, naming the role, a sequential model that needs more than item sequences."""
    name = model_class.__name__
    if name in _REFUSED:
        raise BackboneError(
            f"{role} model '{name}' needs {_REFUSED[name]}, which recbole_kd's sequential "
            "distillation does not read; choose a model trained on item sequences alone, such "
            "as SASRec, GRU4Rec, NARM, Caser or BERT4Rec.")


def has_sequence_representations(model_class: type) -> bool:
    return model_class.__name__ in _SEQUENCE_MODELS


class QueryRows:
    """The training rows a sequential run distils on: the tensors of the training part's
    ``inter_feat`` (shared, not copied). Query q is row q - 1: query 0 is padding, never
    drawn nor listed, as user 0 is for general models."""

    def __init__(self, dataset, model: SequentialRecommender):
        self.dataset = dataset
        feat = dataset.inter_feat
        self.item_seq = feat[model.ITEM_SEQ]  # [n_rows, MAX_ITEM_LIST_LENGTH]
        self.item_seq_len = feat[model.ITEM_SEQ_LEN]  # [n_rows]
        self.target = feat[model.POS_ITEM_ID]  # [n_rows]
        self.user = feat.interaction.get(model.USER_ID)

    def __len__(self) -> int:
        """The number of query ids, padding included."""
        return len(self.target) + 1

    def latest_per_user(self) -> Tensor:
        """LongTensor [1 + users with a training row]: 0 (padding), then each such user's last
        training row, by user id: the user's state at the end of its training history."""
        queries = torch.arange(1, len(self), device=self.target.device)
        last = torch.zeros(int(self.user.max()) + 1, dtype=torch.long, device=queries.device)
        last.scatter_reduce_(0, self.user, queries, reduce="amax")  # rows run in time order
        return torch.cat([last.new_zeros(1), last[last > 0]])


class SequentialBackbone:
    """Scores, representations and own loss of one RecBole sequential model, by query."""

    def __init__(self, model: SequentialRecommender, rows: QueryRows, config):
        self.model = model
        self.rows = rows
        # The batch transform RecBole's loader applies for this model (BERT4Rec's masking).
        self.transform = construct_transform(config) if config["transform"] else None
        self.name = type(model).__name__
        self.kind = "sequence" if self.name in _SEQUENCE_MODELS else "generic"
        self._step: tuple[Tensor, Tensor] | None = None  # (queries, their representations)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def new_step(self) -> None:
        """Forget the sequence representations of the previous training step."""
        self._step = None

    # ----- the queries as RecBole's batches ------------------------------------------------
    def interaction(self, queries: Tensor, pos: Tensor | None = None,
                    neg: Tensor | None = None) -> Interaction:
        """The training rows ``queries`` as a batch of RecBole's sequential loaders."""
        m, rows = self.model, self.rows
        index = queries.to(rows.target.device) - 1
        batch = {m.ITEM_SEQ: rows.item_seq[index], m.ITEM_SEQ_LEN: rows.item_seq_len[index],
                 m.POS_ITEM_ID: rows.target[index] if pos is None else pos}
        if rows.user is not None:
            batch[m.USER_ID] = rows.user[index]
        if neg is not None:
            batch[m.NEG_ITEM_ID] = neg
        return Interaction(batch).to(queries.device)

    # ----- representations ----------------------------------------------------------------
    def encode(self, queries: Tensor) -> Tensor:
        """The sequence representations of ``queries`` [B, d], differentiable. Within a
        training step the model's forward runs once for the step's batch of rows (the first
        queries encoded after :meth:`new_step`), whatever order or subset the own loss and the
        distillers ask for: one dropout draw per step, as when the model trains alone."""
        known = self._from_step(queries)
        if known is not None:
            return known
        if not torch.is_grad_enabled() and len(queries) > NO_GRAD_ROWS:
            # Every row at once (DE's teacher representations of all rows) would hold the
            # activations of all of them: a training batch's worth at a time instead.
            return torch.cat([self.encode(part) for part in queries.split(NO_GRAD_ROWS)])
        unique, inverse = queries.unique(return_inverse=True)
        if len(unique) < len(queries):  # one forward per distinct row (DCD's item side)
            return self.encode(unique)[inverse]
        m = self.model
        batch = self.interaction(queries)
        if self.name in _USER_FIRST:
            output = m.forward(batch[m.USER_ID], batch[m.ITEM_SEQ])
        else:
            output = m.forward(batch[m.ITEM_SEQ], batch[m.ITEM_SEQ_LEN])
        if torch.is_grad_enabled() and self._step is None:  # the step's first: its batch
            self._step = (queries, output)
        return output

    def _from_step(self, queries: Tensor) -> Tensor | None:
        """The step's representations of ``queries`` when the step has encoded them all (the
        batch's rows, or a distiller's ``unique()`` of them), else None."""
        if self._step is None or not torch.is_grad_enabled():
            return None
        encoded, output = self._step
        if queries is encoded:
            return output
        ordered, order = encoded.sort()
        at = torch.searchsorted(ordered, queries).clamp_(max=len(ordered) - 1)
        if not bool((ordered[at] == queries).all()):
            return None
        return output[order[at]]

    def representations(self, queries: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """Query vectors [len(queries), d] and item vectors [len(items), d], differentiable."""
        self._check_representations()
        return self.encode(queries), self.model.item_embedding.weight.index_select(0, items)

    def representation_dim(self) -> int:
        self._check_representations()
        return self.model.item_embedding.weight.shape[1]

    def _check_representations(self) -> None:
        if self.kind != "sequence":
            raise BackboneError(
                f"'{self.name}' has no sequence representation that recbole_kd reads: DE and "
                "HTD need one. Use RRD, BD, RD, CD or DCD with it (they distil through scores).")

    # ----- training loss --------------------------------------------------------------------
    def base_loss(self, queries: Tensor, pos: Tensor, neg: Tensor | None) -> Tensor:
        """The model's own ``calculate_loss`` on the queries' rows (its ``loss_type``: CE over
        every item, or BPR against ``neg``); a "sequence" model's from the step's one forward."""
        m = self.model
        batch = self.interaction(queries, pos, neg)
        if self.kind == "sequence":
            with forward_returning(m, self.encode(queries)):
                loss = m.calculate_loss(batch)
        else:
            if self.transform is not None:
                batch = self.transform(self.rows.dataset, batch)
            loss = m.calculate_loss(batch)
        return sum(loss) if isinstance(loss, tuple) else loss

    def base_loss_and_scores(self, queries: Tensor, pos: Tensor, neg: Tensor | None,
                             items: Tensor) -> tuple[Tensor, Tensor]:
        return self.base_loss(queries, pos, neg), self.score(queries, items)

    # ----- scores ---------------------------------------------------------------------------
    def score(self, queries: Tensor, items: Tensor) -> Tensor:
        """Scores of ``items`` [B, n] for ``queries`` [B]: [B, n], differentiable."""
        if self.kind == "sequence":
            return list_scores(self.encode(queries), self.model.item_embedding.weight, items)
        unique, inverse = queries.unique(return_inverse=True)  # one forward per distinct row
        return self._full_scores(unique)[inverse].gather(1, items)

    def user_list_scores(self, queries: Tensor, items: Tensor) -> Tensor:
        """Scores of the queries ``queries`` [I, N] for the item of their row ``items`` [I]."""
        flat_items = items.unsqueeze(1).expand_as(queries).reshape(-1, 1)
        return self.score(queries.reshape(-1), flat_items).view(queries.shape)

    def _full_scores(self, queries: Tensor) -> Tensor:
        scores = self.model.full_sort_predict(self.interaction(queries))
        return scores.view(len(queries), -1)

    @torch.no_grad()
    def all_item_scores(self, queries: Tensor) -> Tensor:
        """Scores of every item for ``queries``: [len(queries), n_items], no gradient."""
        return self._full_scores(queries)

    @torch.no_grad()
    def evaluation_scores(self, queries: Tensor) -> Tensor:
        return self._full_scores(queries)


@contextmanager
def forward_returning(model: torch.nn.Module, output: Tensor):
    """Within the block, ``model.forward`` returns ``output`` whatever it is given: the model's
    own loss then reads the representation already computed for the step."""
    model.forward = lambda *args, **kwargs: output
    try:
        yield
    finally:
        del model.forward
