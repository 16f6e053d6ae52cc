"""The part DE and HTD share: experts from the student's user and item representations to the
frozen teacher's, chosen by Gumbel-softmax under an annealed temperature."""

from __future__ import annotations

import torch
from torch import Tensor

from recbole_kd.model.base import Distiller, KnowledgeDistillationModel
from recbole_kd.model.layers import DistillationExperts
from recbole_kd.model.sampler.positives import check_rows


class ExpertDistiller(Distiller):
    """A term with user and item experts and the teacher's representations, computed once.

    The temperature decays geometrically from ``tau_start`` to ``tau_end`` over
    ``anneal_epochs`` epochs, starting after ``delay`` epochs at ``tau_start``.
    """

    reads_teacher_after_prepare = False  # only its one-time preparation reads it

    def __init__(self, model: KnowledgeDistillationModel, n_experts: int, tau_start: float,
                 tau_end: float, anneal_epochs: int, delay: int = 0):
        super().__init__(model)
        student_dim = self.student_net.representation_dim()
        teacher_dim = self.teacher_net.representation_dim()
        self.user_experts = DistillationExperts(student_dim, teacher_dim, n_experts)
        self.item_experts = DistillationExperts(student_dim, teacher_dim, n_experts)
        self.tau_start, self.tau_end = tau_start, tau_end
        self.anneal_epochs, self.delay = anneal_epochs, delay
        self.tau = tau_start
        self.teacher_users: Tensor | None = None
        self.teacher_items: Tensor | None = None

    def prepare(self) -> None:
        # The teacher is frozen: its representations are computed once, not in every batch; the
        # users' for this process's block of users alone, the items' for every item.
        device = self.teacher_net.device
        users = torch.arange(self.users.start, self.users.stop, device=device)
        items = torch.arange(self.n_items, device=device)
        self.teacher_users, self.teacher_items = self.teacher_net.representations(users, items)

    def teacher_user_rows(self, users: Tensor) -> Tensor:
        """The teacher's representations of ``users`` (of this process's block)."""
        rows = users - self.users.start
        check_rows(rows, self.users, self.n_users)
        return self.teacher_users[rows]

    def on_epoch_start(self, epoch: int) -> None:
        progress = min(max(epoch - self.delay, 0) / self.anneal_epochs, 1.0)
        self.tau = self.tau_start * (self.tau_end / self.tau_start) ** progress
