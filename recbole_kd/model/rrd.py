r"""RRD
################################################
Reference:
    SeongKu Kang et al. "DE-RRD: A Knowledge Distillation Framework for Recommender System."
    in CIKM 2020.

Relaxed Ranking Distillation: the student learns the teacher's order of a few items sampled from
the top of the teacher's list, all ranked above items the teacher finds uninteresting.
"""

from __future__ import annotations

from logging import getLogger

import torch
from torch import Tensor

from recbole_kd.model.base import Distiller, KnowledgeDistillationModel
from recbole_kd.model.loss import relaxed_ranking_loss
from recbole_kd.model.sampler.relaxed_ranking import RelaxedRankingSampler, teacher_top_n
from recbole_kd.timing import clock


class RRDDistiller(Distiller):
    """The RRD term: lambda_RRD * sum over the batch's unique users of L_RRD(u), divided by B.

    The teacher's top-N list is computed once, for the users this process trains on (its rank's
    in a distributed run); interesting and uninteresting items are redrawn at the start of every
    epoch.
    """

    reads_teacher_after_prepare = False  # only its one-time preparation reads it
    name = "rrd_loss"

    def __init__(self, model: KnowledgeDistillationModel, config):
        super().__init__(model)
        self.weight = config["rrd_weight"]
        self.config = {
            key: config[key]
            for key in ("rrd_top_n", "rrd_interesting", "rrd_uninteresting", "rrd_temperature",
                        "rrd_subsample", "seed", "kd_chunk_size", "show_progress")
        }
        self.sampler: RelaxedRankingSampler | None = None
        self._pending_state: dict | None = None  # sampler state from a checkpoint

    # The sampler's epoch count travels in the model's state_dict, so a resumed run draws what
    # the uninterrupted one would have drawn.
    def get_extra_state(self) -> dict | None:
        return None if self.sampler is None else self.sampler.state_dict()

    def set_extra_state(self, state: dict | None) -> None:
        self.sampler, self._pending_state = None, state  # rebuilt by prepare()

    def prepare(self) -> None:
        c = self.config
        device = self.teacher_net.device
        start = clock()
        top_n = teacher_top_n(
            self.teacher_net.all_item_scores, self.positives, c["rrd_top_n"],
            c["kd_chunk_size"], device, show_progress=c["show_progress"], users=self.users,
        )
        self.top_n_seconds = clock() - start
        getLogger().info(f"RRD teacher top-{c['rrd_top_n']} lists: {self.top_n_seconds:.2f}s")
        state = self.sampler.state_dict() if self.sampler is not None else self._pending_state
        self._pending_state = None
        self.sampler = RelaxedRankingSampler(
            top_n, self.positives, self.n_items, c["rrd_interesting"], c["rrd_uninteresting"],
            temperature=c["rrd_temperature"], subsample=c["rrd_subsample"], seed=c["seed"],
            device=device, chunk_size=c["kd_chunk_size"], users=self.users,
        )
        if state is not None:
            self.sampler.load_state_dict(state)

    def on_epoch_start(self, epoch: int) -> None:
        self.sampler.sample()

    def forward(self, user: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        users = user.unique()
        interesting, uninteresting = self.sampler.for_users(users)
        items = torch.cat([interesting, uninteresting], dim=1)
        scores = self.student_net.score(users, items)
        k = interesting.shape[1]
        loss = relaxed_ranking_loss(scores[:, :k], scores[:, k:]).sum()
        return self.weight * loss / len(user)


class RRD(KnowledgeDistillationModel):
    """A student trained with its own loss plus Relaxed Ranking Distillation."""

    takes_ensemble = True  # reads its teacher's ranking or scores alone

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.distillers.append(RRDDistiller(self, config))
