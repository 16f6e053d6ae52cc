r"""HTD
################################################
Reference:
    SeongKu Kang, Junyoung Hwang, Wonbin Kweon and Hwanjo Yu. "Topology Distillation for
    Recommender System." in KDD 2021.

Hierarchical Topology Distillation: the student's representation space reproduces the frozen
teacher's cosine similarities between the batch's users and items, hierarchically: between
groups (found by DE-style experts on the teacher's representations) and between entities of
the same group; the experts' reconstruction loss trains the grouping.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recbole_kd.model.base import KnowledgeDistillationModel
from recbole_kd.model.competitor_loss import (
    group_prototypes,
    topology_entity_loss,
    topology_group_entity_loss,
    topology_group_group_loss,
)
from recbole_kd.model.expert_distiller import ExpertDistiller


class HTDDistiller(ExpertDistiller):
    """The HTD term: htd_weight * [alpha L_TD + (1 - alpha) L_GA] / B.

    L_GA is DE's reconstruction loss summed over the batch's unique users and unique items
    (positives and negatives as one set, weight 1). L_TD sums the entity-level loss over the
    pairs of one (hard, argmax) group and the group-level loss Group(P, e) (``htd_group_level:
    pe``) or Group(P, P) (``pp``); item groups are separate from user groups.
    """

    name = "htd_loss"

    def __init__(self, model: KnowledgeDistillationModel, config):
        # The authors' schedule: epochs 0 and 1 at tau_start, then geometric decay, reaching
        # tau_end at epoch E + 1 (the annealing is computed after each epoch).
        super().__init__(model, config["htd_num_groups"], config["htd_tau_start"],
                         config["htd_tau_end"], config["htd_anneal_epochs"] or config["epochs"],
                         delay=1)
        self.n_groups = config["htd_num_groups"]
        self.weight = config["htd_weight"]
        self.alpha = config["htd_alpha"]
        self.group_level = config["htd_group_level"]
        self.entity_mask = config["htd_entity_mask"]
        self.prototype_grad = config["htd_prototype_grad"]

    @torch.no_grad()
    def groups(self, teacher_users: Tensor, teacher_items: Tensor) -> Tensor:
        """Hard group of each entity: argmax of its selection network; items offset by K."""
        user_groups = self.user_experts.selector(teacher_users).argmax(dim=-1)
        item_groups = self.item_experts.selector(teacher_items).argmax(dim=-1) + self.n_groups
        return torch.cat([user_groups, item_groups])

    def topology_loss(self, student: Tensor, teacher: Tensor, groups: Tensor) -> Tensor:
        """L_TD of the stacked entities: entity level plus group level (a scalar)."""
        entity = topology_entity_loss(
            student, teacher, groups, teacher_positive_only=self.entity_mask == "reference"
        ).sum()
        return entity + self.group_level_loss(student, teacher, groups)

    def group_level_loss(self, student: Tensor, teacher: Tensor, groups: Tensor) -> Tensor:
        """The group level of L_TD: Group(P, e) or Group(P, P) (a scalar)."""
        proto_source = student if self.prototype_grad else student.detach()
        student_protos, _ = group_prototypes(proto_source, groups, 2 * self.n_groups)
        teacher_protos, _ = group_prototypes(teacher, groups, 2 * self.n_groups)
        if self.group_level == "pe":
            group = topology_group_entity_loss(student_protos, teacher_protos, student, teacher)
        else:
            group = topology_group_group_loss(student_protos, teacher_protos)
        return group.sum()

    def forward(self, user: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        users, items = user.unique(), torch.cat([pos, neg]).unique()
        student_users, student_items = self.student_net.representations(users, items)
        teacher_users, teacher_items = self.teacher_user_rows(users), self.teacher_items[items]
        assignment = (
            self.user_experts(student_users, teacher_users, self.tau).sum()
            + self.item_experts(student_items, teacher_items, self.tau).sum()
        )
        topology = self.topology_loss(
            torch.cat([student_users, student_items]),
            torch.cat([teacher_users, teacher_items]),
            self.groups(teacher_users, teacher_items),
        )
        total = self.alpha * topology + (1 - self.alpha) * assignment
        return self.weight * total / len(user)


class HTD(KnowledgeDistillationModel):
    """A student trained with its own loss plus Hierarchical Topology Distillation."""

    needs_representations = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.distillers.append(HTDDistiller(self, config))
