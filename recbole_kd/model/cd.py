r"""CD
################################################
Reference:
    Jae-woong Lee, Minjin Choi, Jongwuk Lee and Hyunjung Shim. "Collaborative Distillation for
    Top-N Recommendation." arXiv:1911.05276 (ICDM 2019).

Collaborative Distillation: the student learns the teacher's soft labels sigma((t + t2) / t1) on
a few unobserved items per user, drawn with a rank-aware tournament from a guide model's top-N
list (the student's, redrawn every epoch, by default). The formulas are those of the KDs
implementation (woriazzc/KDs); no author code is public.
"""

from __future__ import annotations

from logging import getLogger

import torch
from torch import Tensor

from recbole_kd.model.backbone import clear_caches
from recbole_kd.model.base import Distiller, KnowledgeDistillationModel
from recbole_kd.model.competitor_loss import collaborative_distillation_loss
from recbole_kd.model.sampler.draw_state import CheckpointedDraws
from recbole_kd.model.sampler.positives import user_chunks
from recbole_kd.model.sampler.rank_distillation import candidates_per_user, tournament_positions
from recbole_kd.model.sampler.relaxed_ranking import teacher_top_n


class CDDistiller(CheckpointedDraws, Distiller):
    """The CD term: cd_weight * sum over the batch's triples of L_CD(user), divided by B.

    Each user's n items (``samples`` [n_users, n]) serve all its triples until the next draw:
    at the first epoch, then at the start of every epoch when ``cd_redraw_each_epoch`` is
    true (default null: only for the student guide, as KDs does).
    """

    name = "cd_loss"
    state_names = ("samples",)

    def __init__(self, model: KnowledgeDistillationModel, config):
        super().__init__(model)
        self.weight = config["cd_weight"]
        self.guide = config["cd_guide"]
        self.list_len = config["cd_top_n"]
        self.temperature = config["cd_temperature"]
        self.n_samples = config["cd_samples"]
        self.label_temperature = config["cd_label_temperature"]
        self.label_shift = config["cd_label_shift"]
        redraw = config["cd_redraw_each_epoch"]
        self.redraw = self.guide == "student" if redraw is None else redraw
        self.seed, self.chunk_size = config["seed"], config["kd_chunk_size"]
        self.samples: Tensor | None = None
        self.teacher_scores: Tensor | None = None

    def prepare(self) -> None:
        if self.guide != "random":
            available = candidates_per_user(self.positives)
            if self.list_len > available:
                getLogger().warning(
                    f"cd_top_n={self.list_len} shortened to {available}, the fewest items a "
                    "user can be recommended"
                )
                self.list_len = available
        self.restore_draws(self.seed, self.teacher_net.device)
        if self.samples is not None:
            self._score_samples()

    def on_epoch_start(self, epoch: int) -> None:
        if self.samples is None or self.redraw:
            self.samples = self.draw()
            self._score_samples()

    @torch.no_grad()
    def draw(self) -> Tensor:
        """LongTensor [n_users, n]: each user's items for the coming epoch(s)."""
        device = self.teacher_net.device
        if self.guide == "random":
            # KDs: uniform over every item id, training positives included.
            return torch.randint(
                1,
                self.n_items,
                (self.n_users, self.n_samples),
                device=device,
                generator=self.generator,
            )
        net = self.teacher_net if self.guide == "teacher" else self.student_net
        was_training = net.model.training
        net.model.eval()
        try:
            top = teacher_top_n(
                net.all_item_scores, self.positives, self.list_len, self.chunk_size, device
            )
        finally:
            net.model.train(was_training)
            clear_caches(net.model)
        positions = tournament_positions(
            self.n_users,
            self.list_len,
            self.n_samples,
            self.temperature,
            self.generator,
            device,
            self.chunk_size,
        )
        return top.gather(1, positions)

    @torch.no_grad()
    def _score_samples(self) -> None:
        """The frozen teacher's logits of the drawn items, cached until the next draw."""
        self.teacher_scores = torch.empty(self.samples.shape, device=self.samples.device)
        for users in user_chunks(self.n_users, self.chunk_size, self.samples.device):
            self.teacher_scores[users] = self.teacher_net.score(users, self.samples[users])

    def forward(self, user: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        scores = self.student_net.score(user, self.samples[user])
        loss = collaborative_distillation_loss(
            scores, self.teacher_scores[user], self.label_temperature, self.label_shift
        )
        return self.weight * loss.sum() / len(user)


class CD(KnowledgeDistillationModel):
    """A student trained with its own loss plus Collaborative Distillation."""

    takes_ensemble = True  # reads its teacher's ranking or scores alone

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.distillers.append(CDDistiller(self, config))
