r"""DCD
################################################
Reference:
    Youngjune Lee and Kee-Eung Kim. "Dual Correction Strategy for Ranking Distillation in
    Top-N Recommender System." in CIKM 2021.

Dual Correction Distillation: on the teacher's top-N items of each user (user side) and top-N
users of each item (item side), the student learns the teacher's order of the entries it
under-estimates most, ranked above those it over-estimates, with a relaxed ranking loss. The
discrepancies are refreshed every few epochs; the entries are drawn every batch.
"""

from __future__ import annotations

from logging import getLogger

import torch
from torch import Tensor

from recbole_kd.model.base import Distiller, KnowledgeDistillationModel
from recbole_kd.model.competitor_loss import dual_correction_weights, list_ranks
from recbole_kd.model.loss import relaxed_ranking_loss
from recbole_kd.model.rrd import RRDDistiller
from recbole_kd.model.sampler.draw_state import CheckpointedDraws
from recbole_kd.model.sampler.dual_correction import (
    candidates_per_item,
    top_users_per_item,
    weighted_positions,
)
from recbole_kd.model.sampler.positives import user_chunks
from recbole_kd.model.sampler.rank_distillation import candidates_per_user
from recbole_kd.model.sampler.relaxed_ranking import teacher_top_n


class DCDDistiller(CheckpointedDraws, Distiller):
    """One side of DCD: weight * sum over the batch's unique users (side "user") or unique
    positive items (side "item") of the relaxed ranking loss, divided by B.

    For an anchor a (a user, or an item) with teacher list P_a (N entries, teacher order):
    p list positions drawn without replacement ~ e+ (under-estimated), kept in the teacher's
    order, ranked above p positions drawn ~ e- (over-estimated).
    """

    reads_teacher_after_prepare = False  # only its one-time preparation reads it

    state_names = ("under", "over")

    def __init__(self, model: KnowledgeDistillationModel, config, side: str):
        super().__init__(model)
        self.side = side
        self.name = "ucd_loss" if side == "user" else "icd_loss"
        self.weight = config["dcd_weight_user" if side == "user" else "dcd_weight_item"]
        self.list_len = config["dcd_top_n"]
        self.eps = config["dcd_eps"]
        self.n_samples = config["dcd_samples"]
        self.refresh_epochs = config["dcd_refresh_epochs"]
        self.floor = config["dcd_weight_floor"]
        self.seed = config["seed"] + (0 if side == "user" else 1)
        self.chunk_size = config["kd_chunk_size"]
        self.lists: Tensor | None = None
        self.under: Tensor | None = None  # e+ [anchors, N]
        self.over: Tensor | None = None  # e- [anchors, N]

    def prepare(self) -> None:
        device = self.teacher_net.device
        if self.side == "user":
            available = candidates_per_user(self.positives)
        else:
            view = self.user_queries
            available = candidates_per_item(
                self.positives if view is None else self.positives[view.cpu().numpy()])
        if self.list_len > available:
            getLogger().warning(
                f"dcd_top_n={self.list_len} shortened to {available} on the {self.side} side, "
                f"the fewest entries every {self.side} can list"
            )
            self.list_len = available
        if self.n_samples > self.list_len:
            raise ValueError(
                f"dcd_samples={self.n_samples} exceeds the list length {self.list_len}"
            )
        if self.side == "user":
            self.lists = teacher_top_n(
                self.teacher_net.all_item_scores,
                self.positives,
                self.list_len,
                self.chunk_size,
                device,
            )
        else:
            self.lists = self.top_users_per_item(device)
        self.restore_draws(self.seed, device)

    def top_users_per_item(self, device: torch.device) -> Tensor:
        """Each item's teacher top-N users, as query ids. For sequential models a user is its
        latest training row (its state at the end of its training history), so the item side
        ranks users, not every prefix of their histories."""
        view = self.user_queries
        if view is None:
            return top_users_per_item(self.teacher_net.all_item_scores, self.positives,
                                      self.list_len, self.chunk_size, device)
        view = view.to(device)
        lists = top_users_per_item(lambda users: self.teacher_net.all_item_scores(view[users]),
                                   self.positives[view.cpu().numpy()], self.list_len,
                                   self.chunk_size, device)
        return view[lists]

    def on_epoch_start(self, epoch: int) -> None:
        if epoch % self.refresh_epochs == 0 or self.under is None:
            self.refresh()

    @torch.no_grad()
    def student_list_scores(self, anchors: Tensor) -> Tensor:
        """Student scores of the anchors' list entries, [len(anchors), N]."""
        if self.side == "user":
            return self.student_net.score(anchors, self.lists[anchors])
        return self.student_net.user_list_scores(self.lists[anchors], anchors)

    @torch.no_grad()
    def refresh(self) -> None:
        """e+ and e- of every anchor from the student's ranks within its list."""
        net = self.student_net.model
        was_training = net.training
        net.eval()
        under, over = [], []
        try:
            for anchors in user_chunks(len(self.lists), self.chunk_size, self.lists.device):
                plus, minus = dual_correction_weights(
                    list_ranks(self.student_list_scores(anchors)), self.eps
                )
                under.append(plus)
                over.append(minus)
        finally:
            net.train(was_training)
        self.under, self.over = torch.cat(under), torch.cat(over)
        if self.floor > 0:
            self.under.clamp_(min=self.floor)
            self.over.clamp_(min=self.floor)

    def draw(self, anchors: Tensor) -> tuple[Tensor, Tensor]:
        """(above [A, p] in teacher order, below [A, p]) list entries of the anchors."""
        above = weighted_positions(self.under[anchors], self.n_samples, self.generator)
        below = weighted_positions(self.over[anchors], self.n_samples, self.generator)
        rows = self.lists[anchors]
        return rows.gather(1, above.sort(dim=1).values), rows.gather(1, below)

    def forward(self, user: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        anchors = user.unique() if self.side == "user" else pos.unique()
        above, below = self.draw(anchors)
        entries = torch.cat([above, below], dim=1)
        if self.side == "user":
            scores = self.student_net.score(anchors, entries)
        else:
            scores = self.student_net.user_list_scores(entries, anchors)
        p = above.shape[1]
        loss = relaxed_ranking_loss(scores[:, :p], scores[:, p:]).sum()
        return self.weight * loss / len(user)


class DCD(KnowledgeDistillationModel):
    """A student trained with its own loss plus DCD's user-side and item-side terms, and,
    with ``dcd_rrd_weight`` > 0, RRD's term with that weight (RRD's other settings, the rrd_*
    keys, come from RRD's property file; its ``rrd_weight`` is not used)."""

    takes_ensemble = True  # reads its teacher's ranking or scores alone

    defaults_from = ("RRD",)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.distillers.append(DCDDistiller(self, config, "user"))
        self.distillers.append(DCDDistiller(self, config, "item"))
        if config["dcd_rrd_weight"] > 0:
            rrd = RRDDistiller(self, config)
            rrd.weight = config["dcd_rrd_weight"]
            self.distillers.append(rrd)
