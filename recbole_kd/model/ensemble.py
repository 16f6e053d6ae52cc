"""Several teachers as one: a frozen ensemble that the score-based methods distil from.

A run that names ``teachers`` (a list of ``{model, config, checkpoint}``, each trained and cached
alone like a single teacher, or read from its checkpoint) distils from their ensemble. The
ensemble ranks by rank aggregation, not by raw scores, since heterogeneous models score on
different scales:

    e(q, i) = sum_m exp(-r_m(q, i) / T),    T = 10,

r_m(q, i) being item i's 0-based rank among every item in teacher m's scores for query q. This
is the rank discount HetComp's code (Kang et al., WWW 2023, SeongKu-Kang/HetComp_WWW23, main.py
``get_NDCG_u``) weighs its teachers' top items with; its own ensemble sums per-teacher importance
matrices precomputed outside its repository (its Eq. 8), which could not be checked. The
ensemble's scores are rank-based, so methods that read the teacher's ranking (RRD's and DCD's
top-N lists, RD's top-K) or soft labels of its scores (CD) take it; DE and HTD (representations)
and BD (a trainable teacher) refuse it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recbole_kd.errors import BackboneError

TEMPERATURE = 10.0  # T of the rank discount exp(-r / T)


def rank_aggregate(scores: list[Tensor], temperature: float = TEMPERATURE) -> Tensor:
    """sum_m exp(-rank_m / T) of each row's items, ``scores`` being each teacher's [C, n_items]
    scores of the same rows: [C, n_items] in float64 (exp(-r / 10) stays normal to r ~ 7,000)."""
    total = None
    for member in scores:
        order = member.argsort(dim=1, descending=True, stable=True)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(member.shape[1], device=member.device)
                       .expand_as(order))
        weight = torch.exp(-ranks.double() / temperature)
        total = weight if total is None else total + weight
    return total


class TeacherEnsemble(nn.Module):
    """The teachers of a run, as one frozen module (its state_dict holds ``members.<i>.*``)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)


class EnsembleBackbone:
    """The backbone interface over several teachers' backbones: their rank aggregate."""

    name = "Ensemble"

    def __init__(self, ensemble: TeacherEnsemble, nets: list):
        self.model = ensemble  # None once released, as a single teacher's backbone
        self.nets = nets

    @property
    def device(self) -> torch.device:
        return self.nets[0].device

    @torch.no_grad()
    def all_item_scores(self, queries: Tensor) -> Tensor:
        """The ensemble's scores of every item for ``queries``: [len(queries), n_items]."""
        return rank_aggregate([net.all_item_scores(queries) for net in self.nets]).float()

    def evaluation_scores(self, queries: Tensor) -> Tensor:
        return self.all_item_scores(queries)

    @torch.no_grad()
    def score(self, queries: Tensor, items: Tensor) -> Tensor:
        """The ensemble's scores of ``items`` [B, n] (their place in every item's ranking)."""
        unique, inverse = queries.unique(return_inverse=True)
        return self.all_item_scores(unique)[inverse].gather(1, items)

    def user_list_scores(self, queries: Tensor, items: Tensor) -> Tensor:
        flat_items = items.unsqueeze(1).expand_as(queries).reshape(-1, 1)
        return self.score(queries.reshape(-1), flat_items).view(queries.shape)

    def representations(self, *args):
        raise BackboneError("An ensemble of teachers has no representations: DE and HTD distil "
                            "from a single teacher.")

    def release(self) -> None:
        self.model = None
        for net in self.nets:
            net.model = None
