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

from recbole_kd.model.base import Distiller, KnowledgeDistillationModel
from recbole_kd.model.layers import DistillationExperts


class DEDistiller(Distiller):
    """The DE term: lambda_DE * [L(users) + 0.5 (L(positive items) + L(negative items))] / B.

    Each L sums the reconstruction error over the batch's unique entities, as the reference
    does; dividing by the batch size B puts the term on the scale of RecBole's mean base loss,
    so the published lambda_DE keeps its meaning relative to the base loss.
    """

    name = "de_loss"

    def __init__(self, model: KnowledgeDistillationModel, config):
        super().__init__()
        self.student_net, self.teacher_net = model.student_net, model.teacher_net
        self.n_users, self.n_items = model.n_users, model.n_items
        student_dim = self.student_net.representation_dim()
        teacher_dim = self.teacher_net.representation_dim()
        self.user_experts = DistillationExperts(student_dim, teacher_dim, config["de_num_experts"])
        self.item_experts = DistillationExperts(student_dim, teacher_dim, config["de_num_experts"])
        self.weight = config["de_weight"]
        self.tau_start = config["de_tau_start"]
        self.tau_end = config["de_tau_end"]
        self.anneal_epochs = config["de_anneal_epochs"] or config["epochs"]
        self.tau = self.tau_start
        self.teacher_users: Tensor | None = None
        self.teacher_items: Tensor | None = None

    def prepare(self) -> None:
        # The teacher is frozen: its representations are computed once, not in every batch.
        device = self.teacher_net.device
        users = torch.arange(self.n_users, device=device)
        items = torch.arange(self.n_items, device=device)
        self.teacher_users, self.teacher_items = self.teacher_net.representations(users, items)

    def on_epoch_start(self, epoch: int) -> None:
        # Geometric decay from tau_start to tau_end over the planned epochs; the reference's
        # 10^(-e/100) is this schedule for 1 -> 1e-10 over 1,000 epochs.
        progress = min(epoch / self.anneal_epochs, 1.0)
        self.tau = self.tau_start * (self.tau_end / self.tau_start) ** progress

    def forward(self, user: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        users, pos_items, neg_items = user.unique(), pos.unique(), neg.unique()
        items = torch.cat([pos_items, neg_items])
        student_users, student_items = self.student_net.representations(users, items)
        user_loss = self.user_experts(student_users, self.teacher_users[users], self.tau).sum()
        item_loss = self.item_experts(student_items, self.teacher_items[items], self.tau)
        pos_loss, neg_loss = item_loss.split([len(pos_items), len(neg_items)])
        total = user_loss + 0.5 * (pos_loss.sum() + neg_loss.sum())
        return self.weight * total / len(user)


class DE(KnowledgeDistillationModel):
    """A student trained with its own loss plus Distillation Experts."""

    needs_representations = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.distillers.append(DEDistiller(self, config))
