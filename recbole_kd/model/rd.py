r"""RD
################################################
Reference:
    Jiaxi Tang and Ke Wang. "Ranking Distillation: Learning Compact Ranking Models With High
    Performance for Recommender System." in KDD 2018.

Ranking Distillation: the frozen teacher's top-K items of each user are extra, position-weighted
positives for the student; after a warm-up the weights also favour the items the student ranks
too low, estimated from a few items drawn uniformly among the user's non-interacted ones.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recbole_kd.model.base import Distiller, KnowledgeDistillationModel
from recbole_kd.model.competitor_loss import (
    ranking_distillation_loss,
    rd_discrepancy_weights,
    rd_position_weights,
    renormalize_rows,
)
from recbole_kd.model.sampler.draw_state import CheckpointedDraws
from recbole_kd.model.sampler.positives import PositiveRows
from recbole_kd.model.sampler.rank_distillation import uniform_non_positives
from recbole_kd.model.sampler.relaxed_ranking import teacher_top_n


class RDDistiller(CheckpointedDraws, Distiller):
    """The RD term: rd_weight * sum over the batch's training rows of L_RD(row), divided by B.

    The teacher's top-K list of every user (training positives excluded) is computed once. For
    epochs 0..E0-1 the weights are the static position weights w^a; from epoch E0 on they are
    w^a * w^b, w^b from the ranks the student gives the list against eps dynamic items drawn
    for every training row (``rd_dynamic_per: row``, the authors) or once per user and epoch
    (``user``, KDs).
    """

    reads_teacher_after_prepare = False  # only its one-time preparation reads it
    name = "rd_loss"
    state_names = ("dynamic",)

    def __init__(self, model: KnowledgeDistillationModel, config):
        super().__init__(model)
        self.weight = config["rd_weight"]
        self.top_k = config["rd_top_k"]
        self.sharpness = config["rd_position_sharpness"]
        self.mu = config["rd_mu"]
        self.n_dynamic = config["rd_dynamic_samples"]
        self.start_epoch = config["rd_dynamic_start_epoch"]
        self.renormalize = config["rd_weight_renormalize"]
        self.rank_offset = config["rd_rank_offset"]
        self.dynamic_per = config["rd_dynamic_per"]
        self.seed, self.chunk_size = config["seed"], config["kd_chunk_size"]
        self.top: Tensor | None = None
        self.dynamic: Tensor | None = None  # [n_users, eps] with rd_dynamic_per: user
        self.hybrid = False

    def prepare(self) -> None:
        device = self.teacher_net.device
        self.top = teacher_top_n(
            self.teacher_net.all_item_scores,
            self.positives,
            self.top_k,
            self.chunk_size,
            device,
        )
        self.positive_rows = PositiveRows(self.positives, device)
        self.position_weights = rd_position_weights(self.top_k, self.sharpness, device=device)
        self.restore_draws(self.seed, device)

    def on_epoch_start(self, epoch: int) -> None:
        self.hybrid = epoch >= self.start_epoch  # epochs 1..E0 (1-based) use w^a alone
        if self.hybrid and self.dynamic_per == "user":
            users = torch.arange(self.positive_rows.shape[0], device=self.top.device)
            self.dynamic = uniform_non_positives(
                self.positive_rows, users, self.n_dynamic, self.generator
            )

    def row_weights(self, user: Tensor, top_scores: Tensor) -> Tensor:
        """[B, K] weights of the rows' list items, no gradient."""
        if not self.hybrid:
            return self.position_weights.expand_as(top_scores)
        if self.dynamic_per == "row":
            dynamic = uniform_non_positives(self.positive_rows, user, self.n_dynamic,
                                            self.generator)
        else:
            dynamic = self.dynamic[user]
        with torch.no_grad():
            dynamic_scores = self.student_net.score(user, dynamic)
            weights = self.position_weights * rd_discrepancy_weights(
                top_scores, dynamic_scores, self.n_items, self.mu, self.rank_offset
            )
        return renormalize_rows(weights) if self.renormalize else weights

    def forward(self, user: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        top_scores = self.student_net.score(user, self.top[user])
        loss = ranking_distillation_loss(top_scores, self.row_weights(user, top_scores))
        return self.weight * loss.sum() / len(user)


class RD(KnowledgeDistillationModel):
    """A student trained with its own loss plus Ranking Distillation."""

    takes_ensemble = True  # reads its teacher's ranking or scores alone

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.distillers.append(RDDistiller(self, config))
