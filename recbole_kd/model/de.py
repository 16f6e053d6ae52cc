r"""DE
################################################
Reference:
    SeongKu Kang et al. "DE-RRD: A Knowledge Distillation Framework for Recommender System."
    in CIKM 2020.

Distillation Experts: the student learns the frozen teacher's user and item representations
through expert networks, one chosen per entity by Gumbel-softmax from the teacher's
representation, with a temperature annealed towards 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recbole_kd import distributed
from recbole_kd.model.base import KnowledgeDistillationModel
from recbole_kd.model.expert_distiller import ExpertDistiller


class DEDistiller(ExpertDistiller):
    """The DE term: lambda_DE * [L(users) + 0.5 (L(positive items) + L(negative items))] / B.

    Each L sums the reconstruction error over the batch's unique entities, as the reference
    does (over ranks, an item held by several ranks' shares of the batch is counted once);
    dividing by the batch size B puts the term on the scale of RecBole's mean base loss, so the
    published lambda_DE keeps its meaning relative to the base loss.
    """

    name = "de_loss"

    def __init__(self, model: KnowledgeDistillationModel, config):
        # The reference's 10^(-e/100) is this schedule for 1 -> 1e-10 over 1,000 epochs.
        super().__init__(model, config["de_num_experts"], config["de_tau_start"],
                         config["de_tau_end"], config["de_anneal_epochs"] or config["epochs"])
        self.weight = config["de_weight"]

    def forward(self, user: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        users, pos_items, neg_items = user.unique(), pos.unique(), neg.unique()
        items = torch.cat([pos_items, neg_items])
        student_users, student_items = self.student_net.representations(users, items)
        user_loss = self.user_experts(student_users, self.teacher_user_rows(users), self.tau).sum()
        item_loss = self.item_experts(student_items, self.teacher_items[items], self.tau)
        pos_loss, neg_loss = item_loss.split([len(pos_items), len(neg_items)])
        if distributed.is_distributed():
            # Ranks' shares of a batch may hold the same item: each holder takes its share of
            # the item's term, so that the sum over ranks counts every item of the batch once.
            holders = distributed.rank_counts([pos_items, neg_items], self.n_items)
            pos_loss, neg_loss = pos_loss / holders[0], neg_loss / holders[1]
        total = user_loss + 0.5 * (pos_loss.sum() + neg_loss.sum())
        return self.weight * total / len(user)


class DE(KnowledgeDistillationModel):
    """A student trained with its own loss plus Distillation Experts."""

    needs_representations = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.distillers.append(DEDistiller(self, config))
