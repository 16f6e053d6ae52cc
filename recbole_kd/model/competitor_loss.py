"""Pure losses and weights of RD, CD, DCD and HTD (see ``competitors.md`` sections 2 to 5).

Every function is stateless and vectorised (no loop over users or items) and returns an
unreduced tensor, one value per reference unit (training row, user, item, ...): the reference
code sums over its units and each model divides that sum by the batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Keeps a cosine similarity finite for a zero vector (the reference divides by the norms as is).
_COS_EPS = 1e-12


# ---------------------------------------------------------------- RD (Tang & Wang, KDD 2018)


def rd_position_weights(k: int, sharpness: float, dtype=torch.float32, device=None) -> Tensor:
    """Static position importance w^a_r = exp(-r / lambda) / sum_k exp(-k / lambda), r = 1..K.

    Returns:
        [K] weights summing to 1, largest first.
    """
    ranks = torch.arange(1, k + 1, dtype=dtype, device=device)
    return torch.softmax(-ranks / sharpness, dim=0)


def rd_discrepancy_weights(
    top_scores: Tensor, dynamic_scores: Tensor, n_items: int, mu: float, rank_offset: bool = False
) -> Tensor:
    """Ranking-discrepancy weights w^b_r = max(tanh(mu (r_hat_r - (r - 1))), 0), no gradient.

    r_hat_r = floor((n_items - 1) * n_r / eps) estimates the student's 0-based rank of the
    teacher's r-th item from n_r, the number of the eps dynamic items the student scores higher.

    Args:
        top_scores: [B, K] student scores of the teacher's top-K items, in the teacher's order.
        dynamic_scores: [B, eps] student scores of the row's dynamic items.
        n_items: RecBole's item count (padding included), the reference's ``num_items``.
        mu: sharpness of the weight.
        rank_offset: add 1 to r_hat (KDs' version), so an unbeaten top item weighs tanh(mu).

    Returns:
        [B, K] weights in [0, 1).
    """
    top_scores, dynamic_scores = top_scores.detach(), dynamic_scores.detach()
    beaten_by = (dynamic_scores.unsqueeze(1) > top_scores.unsqueeze(2)).sum(dim=-1)
    estimated = torch.floor(
        (n_items - 1) * beaten_by.to(top_scores.dtype) / dynamic_scores.shape[1]
    )
    if rank_offset:
        estimated = estimated + 1
    positions = torch.arange(top_scores.shape[1], dtype=top_scores.dtype, device=top_scores.device)
    return torch.tanh(mu * (estimated - positions)).clamp(min=0.0)


def ranking_distillation_loss(top_scores: Tensor, weights: Tensor) -> Tensor:
    """L_RD(b) = - sum_r w_r log sigma(s_r), one value per row.

    Args:
        top_scores: [B, K] student logits of the teacher's top-K items (gradient flows here).
        weights: [B, K] or [K] weights, used as constants.

    Returns:
        [B] loss per row, >= 0.
    """
    return -(weights.detach() * F.logsigmoid(top_scores)).sum(dim=-1)


def renormalize_rows(weights: Tensor) -> Tensor:
    """Rows scaled to sum to 1 (KDs' L1 renormalisation); an all-zero row stays zero."""
    total = weights.sum(dim=-1, keepdim=True)
    return weights / total.clamp(min=torch.finfo(weights.dtype).tiny)


# ---------------------------------------------------------------- CD (Lee et al., 2019)


def collaborative_distillation_loss(
    student_scores: Tensor, teacher_scores: Tensor, temperature: float, shift: float
) -> Tensor:
    """L_CD(u) = sum_j BCE(sigma(s_uj), q_uj), q_uj = sigma((t_uj + shift) / temperature).

    Args:
        student_scores: [B, n] student logits of the sampled items (gradient flows here).
        teacher_scores: [B, n] teacher logits of the same items (a constant target).
        temperature, shift: t1 and t2 of the soft label.

    Returns:
        [B] loss per row.
    """
    target = torch.sigmoid((teacher_scores.detach() + shift) / temperature)
    loss = F.binary_cross_entropy_with_logits(student_scores, target, reduction="none")
    return loss.sum(dim=-1)


# ---------------------------------------------------------------- DCD (Lee & Kim, CIKM 2021)


def list_ranks(scores: Tensor) -> Tensor:
    """0-based position of each entry when its row is sorted by descending score: [R, N]."""
    order = scores.argsort(dim=-1, descending=True, stable=True)
    positions = torch.arange(scores.shape[-1], device=scores.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def dual_correction_weights(student_ranks: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Under- and over-estimation weights of each list position (DCD).

    With rho_T(k) = k (the teacher's order) and rho_S the student's rank within the list,
    e+ = tanh(max(eps (rho_S - rho_T), 0)) and e- = tanh(max(eps (rho_T - rho_S), 0)).

    Args:
        student_ranks: [R, N] 0-based ranks (from :func:`list_ranks` of the student's scores).
        eps: the multiplier epsilon.

    Returns:
        (e+ [R, N], e- [R, N]) float weights in [0, 1).
    """
    teacher_ranks = torch.arange(student_ranks.shape[-1], device=student_ranks.device)
    gap = (student_ranks - teacher_ranks).float()
    return torch.tanh((eps * gap).clamp(min=0)), torch.tanh((-eps * gap).clamp(min=0))


# ---------------------------------------------------------------- HTD (Kang et al., KDD 2021)


def cosine_matrix(a: Tensor, b: Tensor) -> Tensor:
    """[n, m] cosine similarities of the rows of ``a`` [n, d] and ``b`` [m, d]."""
    return F.normalize(a, dim=-1, eps=_COS_EPS) @ F.normalize(b, dim=-1, eps=_COS_EPS).T


def group_prototypes(vectors: Tensor, groups: Tensor, n_groups: int) -> tuple[Tensor, Tensor]:
    """Mean vector of each non-empty group.

    Args:
        vectors: [n, d] entity vectors.
        groups: [n] group index of each entity, in 0..n_groups-1.

    Returns:
        (prototypes [G, d] of the G non-empty groups in increasing group order, their ids [G]).
    """
    counts = torch.bincount(groups, minlength=n_groups)
    sums = vectors.new_zeros((n_groups, vectors.shape[1])).index_add(0, groups, vectors)
    present = (counts > 0).nonzero().squeeze(-1)
    return sums[present] / counts[present].unsqueeze(-1).to(vectors.dtype), present


def topology_entity_loss(
    student: Tensor, teacher: Tensor, groups: Tensor, teacher_positive_only: bool = True
) -> Tensor:
    """Entity-level topology loss: sum over ordered pairs (a, b) of one group (diagonal
    included) of (cos(s_a, s_b) - cos(t_a, t_b))^2; with ``teacher_positive_only`` (the
    reference) only pairs with cos(t_a, t_b) > 0 count.

    Returns:
        [n] loss per anchor entity a (sum over its partners b).
    """
    teacher_cos = cosine_matrix(teacher, teacher).detach()
    mask = groups.unsqueeze(0) == groups.unsqueeze(1)
    if teacher_positive_only:
        mask = mask & (teacher_cos > 0)
    gap = cosine_matrix(student, student) - teacher_cos
    return (gap.pow(2) * mask).sum(dim=-1)


def topology_group_entity_loss(
    student_protos: Tensor, teacher_protos: Tensor, student: Tensor, teacher: Tensor
) -> Tensor:
    """Group level Group(P, e): sum over (group g, entity e) of
    (cos(P^S_g, s_e) - cos(P^T_g, t_e))^2.

    Returns:
        [G] loss per group.
    """
    gap = cosine_matrix(student_protos, student) - cosine_matrix(teacher_protos, teacher).detach()
    return gap.pow(2).sum(dim=-1)


def topology_group_group_loss(student_protos: Tensor, teacher_protos: Tensor) -> Tensor:
    """Group level Group(P, P): sum over group pairs (g, h) of
    (cos(P^S_g, P^S_h) - cos(P^T_g, P^T_h))^2.

    Returns:
        [G] loss per group g.
    """
    gap = (
        cosine_matrix(student_protos, student_protos)
        - cosine_matrix(teacher_protos, teacher_protos).detach()
    )
    return gap.pow(2).sum(dim=-1)
