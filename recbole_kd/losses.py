"""Pure distillation losses of DE, RRD and BD (see ``algorithms.md`` sections 2, 3 and 5).

Every function here is stateless and vectorised, and returns an unreduced tensor: the reference
code sums over entities/users/items, RecBole averages, so the reduction is the calling model's
choice and is documented in its property file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Keeps log(alpha) finite when a selection probability underflows to zero (value from the paper).
_LOG_EPS = 1e-10


def relaxed_ranking_loss(interesting: Tensor, uninteresting: Tensor) -> Tensor:
    """Relaxed ranking distillation loss of RRD, one value per user.

    Negative Plackett-Luce log-likelihood of the teacher's order among the interesting items, with
    every uninteresting item ranked below them in any order:

        L(u) = - sum_k [ s_{pi_k} - log( sum_{m >= k} exp(s_{pi_m}) + sum_l exp(s_{l_l}) ) ].

    Args:
        interesting: [U, K] student scores of the K interesting items of each user, in the
            teacher's order (column 0 is the teacher's best item).
        uninteresting: [U, L] student scores of the L uninteresting items of each user, in any order.

    Returns:
        [U] loss per user; each of the K terms is -log of a probability, so the loss is >= 0.
    """
    # Entry k of the reversed cumulative logsumexp is log sum_{m >= k} exp(s_{pi_m}); staying in
    # log space keeps scores of any magnitude finite, where the reference's raw exp overflows.
    tail = torch.logcumsumexp(interesting.flip(-1), dim=-1).flip(-1)
    below = torch.logsumexp(uninteresting, dim=-1, keepdim=True)
    log_denominator = torch.logaddexp(tail, below)
    return (log_denominator - interesting).sum(dim=-1)


def expert_reconstruction_loss(teacher_repr: Tensor, reconstruction: Tensor) -> Tensor:
    """Squared Euclidean distance between teacher representations and their reconstructions (DE).

    Args:
        teacher_repr: [B, d_t] the frozen teacher's representation of each entity.
        reconstruction: [B, d_t] the experts' reconstruction of it from the student's representation.

    Returns:
        [B] ||t_e - r_e||^2 per entity.
    """
    return (teacher_repr - reconstruction).pow(2).sum(dim=-1)


def bidirectional_distillation_loss(scores: Tensor, other_scores: Tensor, tau: float) -> Tensor:
    """Elementwise BD loss: BCE-with-logits of one model's scores against the other's softened ones.

    Args:
        scores: [...] logits of the model being trained (gradient flows here).
        other_scores: [...] logits of the other model, same shape; used only as a target.
        tau: temperature softening the target, sigma(other_scores / tau).

    Returns:
        [...] unreduced loss, same shape as ``scores``; minimised at scores == other_scores / tau.
    """
    # The other model is only a teacher for this step: it must not be moved by this loss.
    target = torch.sigmoid(other_scores.detach() / tau)
    return F.binary_cross_entropy_with_logits(scores, target, reduction="none")


def gumbel_softmax(alpha: Tensor, tau: float, generator: torch.Generator | None = None) -> Tensor:
    """Relaxed one-hot sample from the categorical distribution ``alpha`` (Gumbel-softmax).

    z = softmax((log(alpha + 1e-10) + g) / tau) over the last dim, g ~ Gumbel(0, 1) i.i.d.
    As tau -> 0, z tends to the one-hot of argmax(log alpha + g), which is distributed as alpha
    (Gumbel-max trick).

    Args:
        alpha: [..., M] probabilities over M choices (rows sum to 1); differentiable.
        tau: temperature > 0; safe down to 1e-10 and below.
        generator: optional random generator, on ``alpha``'s device, for reproducible noise.

    Returns:
        [..., M] non-negative weights, each row summing to 1.
    """
    # Clamp U inside (0, 1) so that neither logarithm of g = -log(-log U) reaches infinity.
    info = torch.finfo(alpha.dtype)
    uniform = torch.rand(alpha.shape, generator=generator, dtype=alpha.dtype, device=alpha.device)
    uniform = uniform.clamp(min=info.tiny, max=1.0 - info.eps)
    gumbel = -torch.log(-torch.log(uniform))
    perturbed = torch.log(alpha + _LOG_EPS) + gumbel
    # Shifting by the row maximum before dividing by tau keeps the logits <= 0, so a tiny tau gives
    # -inf (weight 0) rather than overflowing to +inf and producing NaN in the softmax.
    shifted = perturbed - perturbed.max(dim=-1, keepdim=True).values.detach()
    return torch.softmax(shifted / tau, dim=-1)
