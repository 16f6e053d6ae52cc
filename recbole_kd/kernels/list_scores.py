"""Inner-product scores of users against lists of items, with a backward built for item tables.

RRD scores each user of a batch against its K + L sampled items, BD against its drawn items: many
rows of a (user or item) table per batch. Autograd's backward of a row gather scatters one
d-vector per gathered row into the table's gradient, RRD's most expensive operation on CPU. Here,
when a batch gathers at least as many rows as a narrow table has, the gradient is accumulated
feature-major instead (a [d, n_rows] buffer, index_add_ along its rows of length n_rows), which
stays deterministic with several threads and runs on any device; wide rows are scattered one by
one, which is faster for them (measured in docs/performance.md, ``benchmarks/kernels.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def list_scores(user_e: Tensor, item_table: Tensor, items: Tensor) -> Tensor:
    """Scores ``[B, n]``: score[b, j] = <user_e[b], item_table[items[b, j]]>, differentiable.

    Args:
        user_e: [B, d] user representations.
        item_table: [n_rows, d] item representations, e.g. an embedding weight; gradients flow
            into it as into an ``index_select`` of its rows.
        items: LongTensor [B, n] of row indices into ``item_table``.
    """
    return _ListScores.apply(user_e, item_table, items)


class _ListScores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, user_e: Tensor, item_table: Tensor, items: Tensor) -> Tensor:
        flat = items.reshape(-1)
        item_e = item_table.index_select(0, flat).view(*items.shape, -1)
        ctx.save_for_backward(user_e, item_e, flat)
        ctx.table_rows = item_table.shape[0]
        # A broadcast product: einsum's batched products of tiny matrices measured slower.
        return (item_e * user_e.unsqueeze(1)).sum(-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        user_e, item_e, flat = ctx.saved_tensors
        grad_user = grad_table = None
        if ctx.needs_input_grad[0]:
            grad_user = (grad.unsqueeze(-1) * item_e).sum(1)
        if ctx.needs_input_grad[1]:
            grad_table = _table_gradient(user_e, grad, flat, ctx.table_rows)
        return grad_user, grad_table, None


# Widest table rows accumulated feature-major (see the module's docstring).
FEATURE_MAJOR_MAX_DIM = 32


def _table_gradient(user_e: Tensor, grad: Tensor, flat: Tensor, table_rows: int) -> Tensor:
    """[table_rows, d]: each gathered row's gradient grad[b, j] * user_e[b], summed per row."""
    if len(flat) < table_rows or user_e.shape[1] > FEATURE_MAJOR_MAX_DIM:
        # Fewer gathered rows than table rows (BD's one draw per pair against a large catalogue):
        # the row scatter is cheap, and a transposed result would cost a strided copy of the
        # whole table when autograd accumulates it. Wide rows: one row is one long vector add.
        rows = (grad.unsqueeze(-1) * user_e.unsqueeze(1)).reshape(len(flat), -1)
        return rows.new_zeros(table_rows, rows.shape[1]).index_add_(0, flat, rows)
    # Column c of ``rows`` is the gradient of the row gathered at position c. Both factors
    # contiguous, so the product is laid out feature-major with no copy.
    user_t = user_e.t().contiguous().unsqueeze(-1)
    rows = (user_t * grad.contiguous().unsqueeze(0)).view(user_e.shape[1], -1)
    return rows.new_zeros(rows.shape[0], table_rows).index_add_(1, flat, rows).t()
