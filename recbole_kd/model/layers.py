"""Distillation Experts (DE) of DE-RRD (Kang et al., CIKM 2020), for one entity type.

A DE-based model holds one :class:`DistillationExperts` for users and one for items. The module
exists only for training: the deployed student is the plain small model.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from recbole_kd.errors import KDConfigError
from recbole_kd.model.loss import expert_reconstruction_loss, gumbel_softmax


class DistillationExperts(nn.Module):
    """M expert MLPs mapping student to teacher representations, one chosen per entity.

    Expert m is E_m(x) = W2_m ReLU(W1_m x + b1_m) + b2_m with sizes [d_s, floor((d_t + d_s)/2), d_t].
    A selection network alpha = softmax(W_sel t + b_sel), fed by the TEACHER representation t, picks
    the expert through a Gumbel-softmax z with temperature tau, and the reconstruction is
    r = sum_m z_m E_m(s). Annealing tau towards 0 makes the choice hard, so each expert specialises
    in one region of the teacher's space.

    The experts' weights are stacked along a leading expert axis so that all M experts run as two
    matrix products. Once tau is small most weights z are exactly 0, and a sparse path computes
    only the (entity, expert) pairs with z != 0 (see :meth:`reconstruct`).
    """

    #: Share of non-zero entries of z below which :meth:`reconstruct` takes the sparse path on
    #: CPU. Measured on a 2-core CPU (B = 3,000, d_s 20, d_t 200, M 30, forward + backward): the
    #: sparse path costs as much as the dense one when every weight is non-zero, 0.65x at 70 %,
    #: 0.45x at 50 % and 0.1x for one-hot rows; switching at half keeps a margin for noise.
    sparse_threshold: float = 0.5

    def __init__(self, student_dim: int, teacher_dim: int, num_experts: int) -> None:
        super().__init__()
        if min(student_dim, teacher_dim, num_experts) < 1:
            raise KDConfigError(
                "student_dim, teacher_dim and num_experts must be positive, got "
                f"{student_dim}, {teacher_dim}, {num_experts}"
            )
        self.student_dim = student_dim
        self.teacher_dim = teacher_dim
        self.num_experts = num_experts
        self.hidden_dim = (teacher_dim + student_dim) // 2
        self.w1 = nn.Parameter(torch.empty(num_experts, student_dim, self.hidden_dim))
        self.b1 = nn.Parameter(torch.empty(num_experts, self.hidden_dim))
        self.w2 = nn.Parameter(torch.empty(num_experts, self.hidden_dim, teacher_dim))
        self.b2 = nn.Parameter(torch.empty(num_experts, teacher_dim))
        self.selector = nn.Linear(teacher_dim, num_experts)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise each expert layer as ``nn.Linear`` would: U(+-1/sqrt(fan_in)) for all weights."""
        for weight, bias, fan_in in (
            (self.w1, self.b1, self.student_dim),
            (self.w2, self.b2, self.hidden_dim),
        ):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)
        self.selector.reset_parameters()

    def selection(
        self, teacher_repr: Tensor, tau: float, generator: torch.Generator | None = None
    ) -> Tensor:
        """Expert weights z of each entity, drawn by Gumbel-softmax from the selection network.

        Args:
            teacher_repr: [B, d_t] teacher representations; detached here because the teacher is
                frozen, so no gradient is ever sent back into it.
            tau: Gumbel-softmax temperature (> 0); near 0 each row of z is one-hot.
            generator: optional generator, on the module's device, for reproducible noise.

        Returns:
            [B, M] non-negative expert weights, rows summing to 1.
        """
        alpha = torch.softmax(self.selector(teacher_repr.detach()), dim=-1)
        return gumbel_softmax(alpha, tau, generator)

    def reconstruct(self, student_repr: Tensor, z: Tensor, sparse: bool | None = None) -> Tensor:
        """Mixture of expert outputs r = sum_m z_m E_m(s), skipping the pairs where z_m == 0.

        Late in the annealing, float32 Gumbel-softmax weights are mostly exactly 0.0. Such a pair
        adds exactly 0 to r, its expert gets exactly 0 gradient from it, and the softmax Jacobian
        z_j (delta_jm - z_m) / tau sends exactly 0 back to the selector, so leaving it out is exact
        (equal up to float summation order). Only the gradient with respect to z itself differs:
        where z_m == 0 the sparse path leaves out the (W2_m h_m) . dL/dr part of dL/dz_m, which a
        softmax multiplies by z_m = 0 anyway.

        The sparse path is chosen automatically on CPU only: it trades M small products (and a
        host sync) for FLOPs, which pays where FLOPs are scarce; on an accelerator the dense
        path's few large products are likely faster (not measured yet).

        Args:
            student_repr: [B, d_s] student representations.
            z: [B, M] expert weights (e.g. from :meth:`selection`).
            sparse: force the sparse (True) or the dense (False) computation; None picks the
                sparse one on CPU when under ``sparse_threshold`` of z is non-zero.

        Returns:
            [B, d_t] reconstructed teacher representations.
        """
        if sparse is None:
            sparse = z.device.type == "cpu" and (
                int(torch.count_nonzero(z)) < self.sparse_threshold * z.numel()
            )
        if sparse:
            return self._reconstruct_sparse(student_repr, z)
        return self._reconstruct_dense(student_repr, z)

    def forward(
        self,
        student_repr: Tensor,
        teacher_repr: Tensor,
        tau: float,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """DE loss of each entity: ||t_e - sum_m z_{e,m} E_m(s_e)||^2.

        Args:
            student_repr: [B, d_s] student representations (trainable).
            teacher_repr: [B, d_t] frozen teacher representations of the same entities.
            tau: Gumbel-softmax temperature (> 0).
            generator: optional generator for the Gumbel noise.

        Returns:
            [B] unreduced reconstruction loss; the model chooses sum or mean.
        """
        z = self.selection(teacher_repr, tau, generator)
        return expert_reconstruction_loss(teacher_repr.detach(), self.reconstruct(student_repr, z))

    def _reconstruct_dense(self, student_repr: Tensor, z: Tensor) -> Tensor:
        """Every (entity, expert) pair, as two matrix products with no loop over experts.

        Because z_m is a scalar per entity, sum_m z_m (W2_m h_m + b2_m) equals
        [z_1 h_1, ..., z_M h_M] @ [W2_1; ...; W2_M] + z @ B2: the first layer of all experts is one
        [d_s, M*h] product and the weighted second layer one [M*h, d_t] product. One large GEMM
        measured faster than batched per-expert products (benchmarks/kernels.py), and ``addmm``
        folds the bias additions into the products.
        """
        num_experts, hidden_dim = self.num_experts, self.hidden_dim
        w1 = self.w1.permute(1, 0, 2).reshape(self.student_dim, num_experts * hidden_dim)
        hidden = torch.relu(torch.addmm(self.b1.reshape(-1), student_repr, w1))
        weighted = (hidden.view(-1, num_experts, hidden_dim) * z.unsqueeze(-1)).reshape(
            -1, num_experts * hidden_dim
        )
        w2 = self.w2.reshape(num_experts * hidden_dim, self.teacher_dim)
        return torch.addmm(z @ self.b2, weighted, w2)

    def _reconstruct_sparse(self, student_repr: Tensor, z: Tensor) -> Tensor:
        """Only the (entity, expert) pairs with z != 0, grouped by expert.

        The loop runs over the M experts, never over entities: each expert takes its entities as
        one contiguous block of the gathered inputs, so its two layers are two small products.
        """
        # nonzero() is sorted lexicographically, so on z^T the pairs come grouped by expert.
        experts, rows = z.t().nonzero(as_tuple=True)
        counts = torch.bincount(experts, minlength=self.num_experts).tolist()
        inputs = student_repr.index_select(0, rows).split(counts)
        weights = z[rows, experts].unsqueeze(-1).split(counts)
        # One unbind per weight, not M indexings: each indexing's backward would write a zero
        # gradient of the whole stacked weight, M times over.
        layers = zip(self.w1.unbind(0), self.b1.unbind(0), self.w2.unbind(0))
        outputs = [
            _weighted_expert(x, w, layer)
            for x, w, layer, count in zip(inputs, weights, layers, counts)
            if count > 0
        ]
        # The bias term z @ B2 is cheap and dense: it keeps b2's gradient identical too.
        result = z @ self.b2
        if not outputs:
            return result
        return result.index_add(0, rows, torch.cat(outputs))


def _weighted_expert(
    inputs: Tensor, weights: Tensor, layer: tuple[Tensor, Tensor, Tensor]
) -> Tensor:
    """z-weighted output of one expert without its last bias: z W2 ReLU(W1 x + b1), [n, d_t].

    Scaling the hidden layer (width h) rather than the output (width d_t > h) by z is the
    cheaper of the two equal products.
    """
    w1, b1, w2 = layer
    return (torch.relu(torch.addmm(b1, inputs, w1)) * weights) @ w2
