r"""BD
################################################
Reference:
    Wonbin Kweon, SeongKu Kang, Hwanjo Yu. "Bidirectional Distillation for Top-K Recommender
    System." in WWW 2021.

Teacher and student train together and each learns from the other: the student on items the
teacher ranks higher than the student does, the teacher (softly) on items the student ranks
higher, both chosen by rank discrepancy-aware sampling refreshed every few epochs.
"""

from __future__ import annotations

from logging import getLogger
from typing import NamedTuple

import torch
from torch import Tensor

from recbole_kd.model.backbone import Backbone, clear_caches, is_row_model
from recbole_kd.model.base import KnowledgeDistillationModel
from recbole_kd.model.loss import bidirectional_distillation_loss
from recbole_kd.model.row_loss import distinct_pairs
from recbole_kd.model.sampler.rank_discrepancy import RankDiscrepancySampler


class BDBatch(NamedTuple):
    """One training batch with its BD draws, shared by the teacher's and the student's step."""

    user: Tensor  # [B]
    pos: Tensor  # [B]
    neg: Tensor  # [B]
    for_student: Tensor  # [B, P] items of the student's BD loss (teacher -> student)
    for_teacher: Tensor  # [B, P] items of the teacher's BD loss (student -> teacher)
    teacher_targets: Tensor  # [B, P] teacher scores of for_student, taken before the teacher's step


class UserBatch(NamedTuple):
    """A batch of users of two user-row models: each user's BD items as distinct (row of the
    batch, item) pairs, and each model's own loss and logits from its one forward of the batch
    (before any step)."""

    users: Tensor  # [U] distinct users
    for_student: tuple[Tensor, Tensor]  # (rows, items): the student's BD loss
    for_teacher: tuple[Tensor, Tensor]  # (rows, items): the teacher's BD loss
    own_losses: dict[str, Tensor]  # by role, differentiable
    logits: dict[str, Tensor]  # by role, [U, n_items], differentiable


class BD(KnowledgeDistillationModel):
    """Both models trainable; each is trained on its own loss plus its BD loss.

    L_X = L_base(X) + lambda_X * sum_(u,j) BCE(score_X(u, j), sigmoid(score_other(u, j) / tau)) / B.
    The trainer steps the teacher first, then the student (``BDTrainer``).

    Between two user-row models (CDAE) BD trains on batches of users, as the BD authors' CDAE
    notebook does and as RecBole trains CDAE alone: each user's own row loss once per epoch, and
    ``bd_items_per_positive`` x |I_u| items drawn per direction, an item drawn twice counted
    once; the BD term is then a sum over those items, as the models' own row losses are sums.
    """

    teacher_trainable = True
    pretrained_roles = ("teacher", "student")
    exported_roles = ("teacher", "student")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.weight = {"teacher": config["bd_weight_teacher"], "student": config["bd_weight_student"]}
        self.tau = config["bd_tau"]
        self.update_epochs = config["bd_update_epochs"]
        self.items_per_positive = config["bd_items_per_positive"]
        self.sampled_as_negative = config["bd_sampled_as_negative"]
        self.show_progress = config["show_progress"]
        self.sampler_args = {
            "eps_t": config["bd_eps_teacher"],
            "eps_s": config["bd_eps_student"],
            "convention": config["bd_rank_convention"],
            "positives_mode": config["bd_positives"],
            "items_per_positive": self.items_per_positive,
            "seed": config["seed"],
            "chunk_size": config["kd_chunk_size"],
        }
        self.sampler: RankDiscrepancySampler | None = None
        self.user_batches = self.trains_on_user_batches(config)

    @classmethod
    def trains_on_user_batches(cls, config) -> bool:
        return is_row_model(config["teacher_model"]) and is_row_model(config["student_model"])

    # ----- rank refresh ------------------------------------------------------------------------
    def _ensure_sampler(self) -> RankDiscrepancySampler:
        if self.sampler is None:
            device = self.student_net.device
            self.sampler = RankDiscrepancySampler(
                self.positives, self.n_items, device=device, users=self.owned_users,
                **self.sampler_args
            )
        return self.sampler

    def on_epoch_start(self, epoch: int) -> None:
        self._ensure_sampler()
        if epoch % self.update_epochs == 0:
            self.refresh_ranks()

    @torch.no_grad()
    def refresh_ranks(self) -> None:
        """Both models rank all items; draws for the next ``bd_update_epochs`` epochs are made."""
        was_training = self.training
        self.eval()
        for model in (self.teacher, self.student):
            clear_caches(model)
        self.sampler.refresh(
            self.teacher_net.all_item_scores, self.student_net.all_item_scores, self.update_epochs,
            show_progress=self.show_progress,
        )
        for model in (self.teacher, self.student):
            clear_caches(model)
        self.train(was_training)
        getLogger().info(f"BD rank refresh: {self.sampler.last_refresh_seconds:.2f}s")

    # ----- losses ------------------------------------------------------------------------------
    def draw(self, interaction) -> BDBatch | UserBatch:
        """The batch's BD items and the teacher's targets for the student, before any step."""
        if self.user_batches:
            return self.draw_for_users(interaction[self.USER_ID])
        user, pos, neg = self.triples(interaction)
        draws = [self.sampler.next_items(user) for _ in range(self.items_per_positive)]
        for_student = torch.stack([d[0] for d in draws], dim=1)
        for_teacher = torch.stack([d[1] for d in draws], dim=1)
        with torch.no_grad():
            teacher_targets = self.teacher_net.score(user, for_student)
        return BDBatch(user, pos, neg, for_student, for_teacher, teacher_targets)

    def draw_for_users(self, users: Tensor) -> UserBatch:
        """Each user's ``bd_items_per_positive`` x |I_u| draws per direction, an item drawn
        twice marked once, and one forward of each model: its output is both its own prediction
        and, detached, the other model's target (the teacher's taken before its step), as in
        the notebook."""
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device),
                                       self.sampler.positives.counts[users])  # |I_u| each
        draws = [self.sampler.next_items(users[rows]) for _ in range(self.items_per_positive)]
        rows = rows.repeat(self.items_per_positive)
        for_student, for_teacher = (
            distinct_pairs(rows, torch.cat([draw[direction] for draw in draws]), self.n_items)
            for direction in (0, 1))
        own_losses, logits = {}, {}
        for role in ("teacher", "student"):
            own_losses[role], logits[role] = getattr(self, f"{role}_net").row_loss_and_logits(users)
        return UserBatch(users, for_student, for_teacher, own_losses, logits)

    def losses(self, role: str, batch: BDBatch | UserBatch) -> tuple[Tensor, Tensor]:
        """(own loss, weighted BD loss) of ``role``, with the other model's scores as targets."""
        if isinstance(batch, UserBatch):
            return self.user_batch_losses(role, batch)
        net: Backbone = getattr(self, f"{role}_net")
        items = getattr(batch, f"for_{role}")
        neg = items[:, 0] if self.sampled_as_negative else batch.neg
        if role == "student":
            targets = batch.teacher_targets
        else:
            with torch.no_grad():
                targets = self.student_net.score(batch.user, items)
        base, scores = net.base_loss_and_scores(batch.user, batch.pos, neg, items)
        bd = bidirectional_distillation_loss(scores, targets, self.tau)
        return base, self.weight[role] * bd.sum() / len(batch.user)

    def user_batch_losses(self, role: str, batch: UserBatch) -> tuple[Tensor, Tensor]:
        """Own row loss of the batch's users and the BD term summed over their marked items."""
        other = "student" if role == "teacher" else "teacher"
        marked = getattr(batch, f"for_{role}")
        bd = bidirectional_distillation_loss(batch.logits[role][marked],
                                             batch.logits[other][marked], self.tau)
        return batch.own_losses[role], self.weight[role] * bd.sum()

    @property
    def loss_names(self) -> list[str]:
        return [f"teacher_{self.teacher_net.name.lower()}_loss", "teacher_bd_loss",
                f"student_{self.student_net.name.lower()}_loss", "student_bd_loss"]

    def calculate_loss(self, interaction):
        raise RuntimeError("BD trains two models with two optimizers: use BDTrainer.")

    # The sampler's pools, pointers and random state travel in the model's state_dict, so a
    # resumed run draws what the uninterrupted one would have drawn.
    def get_extra_state(self) -> dict | None:
        return None if self.sampler is None else self.sampler.state_dict()

    def set_extra_state(self, state: dict | None) -> None:
        if state is not None:
            self._ensure_sampler().load_state_dict(state)
