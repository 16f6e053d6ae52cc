"""list_scores: the scores and both gradients of an index_select-based computation."""

from __future__ import annotations

import torch

from recbole_kd.kernels.list_scores import FEATURE_MAJOR_MAX_DIM, list_scores


def _case(dtype=torch.float64, users=6, per_user=7, rows=9, dim=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    user_e = torch.randn(users, dim, dtype=dtype, generator=generator, requires_grad=True)
    table = torch.randn(rows, dim, dtype=dtype, generator=generator, requires_grad=True)
    # Few rows for many draws: items repeat within and across users, so gradients accumulate.
    items = torch.randint(rows, (users, per_user), generator=generator)
    return user_e, table, items


def test_gradients_pass_gradcheck():
    user_e, table, items = _case()
    assert torch.autograd.gradcheck(lambda u, t: list_scores(u, t, items), (user_e, table))


def test_matches_gathered_rows_and_their_autograd():
    user_e, table, items = _case(users=50, per_user=80, rows=30, dim=20)
    weights = torch.randn(50, 80, dtype=torch.float64)  # a non-uniform upstream gradient
    expected = (table[items] * user_e.unsqueeze(1)).sum(-1)
    expected_grads = torch.autograd.grad((expected * weights).sum(), (user_e, table))
    scores = list_scores(user_e, table, items)
    grads = torch.autograd.grad((scores * weights).sum(), (user_e, table))
    torch.testing.assert_close(scores, expected)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)


def test_only_the_needed_gradient_is_computed():
    user_e, table, items = _case()
    frozen_users = user_e.detach()
    (grad,) = torch.autograd.grad(list_scores(frozen_users, table, items).sum(), (table,))
    assert grad.shape == table.shape
    unused = torch.ones(table.shape[0], dtype=torch.bool)
    unused[items.unique()] = False
    assert bool((grad[unused] == 0).all()) and bool((grad[~unused] != 0).any())


def test_table_gradient_is_identical_with_one_and_two_threads():
    user_e, table, items = _case(dtype=torch.float32, users=400, per_user=80, rows=500, dim=20)
    threads = torch.get_num_threads()
    grads = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            grads.append(torch.autograd.grad(list_scores(user_e, table, items).sum(), (table,))[0])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(grads[0], grads[1])


def test_few_gathered_rows_of_a_large_table_give_the_same_gradients():
    user_e, table, items = _case(users=4, per_user=3, rows=50, dim=5)  # 12 rows gathered of 50
    weights = torch.randn(4, 3, dtype=torch.float64)
    expected = torch.autograd.grad(((table[items] * user_e.unsqueeze(1)).sum(-1) * weights).sum(), (table,))
    (got,) = torch.autograd.grad((list_scores(user_e, table, items) * weights).sum(), (table,))
    torch.testing.assert_close(got, expected[0])
    assert got.is_contiguous()
    assert torch.autograd.gradcheck(lambda u, t: list_scores(u, t, items), (user_e, table))


def test_many_gathered_rows_of_a_wide_table_give_the_same_gradients():
    # 60 rows gathered of 10, each wider than FEATURE_MAJOR_MAX_DIM: scattered row by row.
    user_e, table, items = _case(users=6, per_user=10, rows=10, dim=FEATURE_MAJOR_MAX_DIM + 8)
    weights = torch.randn(6, 10, dtype=torch.float64)
    expected = torch.autograd.grad(((table[items] * user_e.unsqueeze(1)).sum(-1) * weights).sum(), (table,))
    (got,) = torch.autograd.grad((list_scores(user_e, table, items) * weights).sum(), (table,))
    torch.testing.assert_close(got, expected[0])
    assert got.is_contiguous()  # the feature-major path returns a transposed view
