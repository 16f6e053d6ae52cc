"""Behaviour of the pure KD losses and of the Distillation Experts module (CPU, no RecBole)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recbole_kd.model.layers import DistillationExperts
from recbole_kd.model.loss import (
    bidirectional_distillation_loss,
    expert_reconstruction_loss,
    gumbel_softmax,
    relaxed_ranking_loss,
)


def _log_sum_exp(values: list[float]) -> float:
    """Stable scalar log(sum(exp(v))) in Python floats (double precision)."""
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _slow_relaxed_ranking(interesting: torch.Tensor, uninteresting: torch.Tensor) -> list[float]:
    """Direct double loop over users and positions of the RRD formula, in double precision."""
    losses = []
    for pos_row, neg_row in zip(interesting.tolist(), uninteresting.tolist()):
        loss = 0.0
        for k, score in enumerate(pos_row):
            loss -= score - _log_sum_exp(pos_row[k:] + neg_row)
        losses.append(loss)
    return losses


# ---------------------------------------------------------------- relaxed ranking (RRD)


def test_relaxed_ranking_matches_direct_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    interesting = torch.randn(3, 4, generator=gen)
    uninteresting = torch.randn(3, 5, generator=gen)
    # Independent raw-exp reference: fine at these magnitudes, and shares no code with the loss.
    expected = [
        -sum(
            pos[k] - math.log(sum(math.exp(v) for v in pos[k:]) + sum(math.exp(v) for v in neg))
            for k in range(len(pos))
        )
        for pos, neg in zip(interesting.tolist(), uninteresting.tolist())
    ]
    got = relaxed_ranking_loss(interesting, uninteresting)
    assert got.shape == (3,)
    torch.testing.assert_close(got, torch.tensor(expected), rtol=0, atol=1e-5)


def test_relaxed_ranking_is_finite_and_exact_for_huge_scores() -> None:
    gen = torch.Generator().manual_seed(1)
    interesting = (torch.rand(4, 6, generator=gen) * 2 - 1) * 1e4
    uninteresting = (torch.rand(4, 7, generator=gen) * 2 - 1) * 1e4
    interesting[0] = 1e4  # ties at the top of the range
    uninteresting[1] = -1e4
    got = relaxed_ranking_loss(interesting, uninteresting)
    assert torch.isfinite(got).all()
    expected = torch.tensor(
        _slow_relaxed_ranking(interesting.double(), uninteresting.double()), dtype=torch.float64
    )
    # float32 resolves about 1e-3 at 1e4, and the K terms add up.
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-2)


def test_relaxed_ranking_gradient_is_finite_for_huge_scores() -> None:
    gen = torch.Generator().manual_seed(2)
    interesting = ((torch.rand(4, 6, generator=gen) * 2 - 1) * 1e4).requires_grad_()
    uninteresting = torch.full((4, 7), 1e4).requires_grad_()
    relaxed_ranking_loss(interesting, uninteresting).sum().backward()
    assert torch.isfinite(interesting.grad).all()
    assert torch.isfinite(uninteresting.grad).all()
    assert interesting.grad.abs().sum() > 0


@pytest.mark.parametrize("scale", [0.1, 1.0, 30.0, 1e4])
def test_relaxed_ranking_is_non_negative(scale: float) -> None:
    gen = torch.Generator().manual_seed(3)
    interesting = torch.randn(50, 8, generator=gen) * scale
    uninteresting = torch.randn(50, 5, generator=gen) * scale
    assert (relaxed_ranking_loss(interesting, uninteresting) >= 0).all()


def test_relaxed_ranking_rewards_teacher_order_above_uninteresting() -> None:
    descending = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    low = torch.zeros(1, 3)
    aligned = relaxed_ranking_loss(descending + 5.0, low)
    reversed_order = relaxed_ranking_loss(descending.flip(-1) + 5.0, low)
    below_uninteresting = relaxed_ranking_loss(descending - 5.0, low)
    assert aligned < reversed_order
    assert aligned < below_uninteresting
    # Widening the margins drives the likelihood of the teacher's order to 1.
    assert relaxed_ranking_loss(descending * 20 + 100, low) < 1e-6


def test_relaxed_ranking_minimisation_recovers_teacher_order() -> None:
    gen = torch.Generator().manual_seed(4)
    interesting = torch.randn(2, 5, generator=gen).requires_grad_()
    uninteresting = torch.randn(2, 6, generator=gen).requires_grad_()
    optimizer = torch.optim.Adam([interesting, uninteresting], lr=0.1)
    for _ in range(300):
        optimizer.zero_grad()
        relaxed_ranking_loss(interesting, uninteresting).sum().backward()
        optimizer.step()
    scores = interesting.detach()
    assert (scores[:, :-1] > scores[:, 1:]).all(), "interesting items not in teacher order"
    assert (scores.min(dim=1).values > uninteresting.detach().max(dim=1).values).all()


def _double_precision_ranking(interesting: torch.Tensor, uninteresting: torch.Tensor):
    """Loss and input gradients from the running-shift formulation, in float64."""
    pos = interesting.detach().double().requires_grad_()
    neg = uninteresting.detach().double().requires_grad_()
    tail = torch.logcumsumexp(pos.flip(-1), dim=-1).flip(-1)
    below = torch.logsumexp(neg, dim=-1, keepdim=True)
    loss = (torch.logaddexp(tail, below) - pos).sum(-1)
    loss.sum().backward()
    return loss.detach(), pos.grad, neg.grad


def _assert_matches_double_precision(interesting, uninteresting, loss_atol: float) -> None:
    """The float32 loss and its gradients equal the float64 reference computation."""
    loss = relaxed_ranking_loss(interesting, uninteresting)
    loss.sum().backward()
    expected, pos_grad, neg_grad = _double_precision_ranking(interesting, uninteresting)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=loss_atol)
    torch.testing.assert_close(interesting.grad.double(), pos_grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(uninteresting.grad.double(), neg_grad, rtol=1e-5, atol=1e-6)


def test_relaxed_ranking_values_and_gradients_match_double_precision() -> None:
    gen = torch.Generator().manual_seed(20)
    interesting = (torch.randn(64, 40, generator=gen) * 3).requires_grad_()
    uninteresting = (torch.randn(64, 40, generator=gen) * 3).requires_grad_()
    _assert_matches_double_precision(interesting, uninteresting, loss_atol=1e-4)


def test_relaxed_ranking_is_exact_where_a_shared_shift_underflows() -> None:
    # Row 0 spans 100 nats: under a shift by its maximum, e^-100 is a float32 denormal with almost
    # no precision, so the last two denominators are only right if the row is recomputed.
    # Row 1 is ordinary and shares the batch with it.
    interesting = torch.tensor([[0.0, -100.0, -100.5], [0.3, 0.1, -0.2]], requires_grad=True)
    uninteresting = torch.tensor([[-101.0, -102.0], [0.0, -1.0]], requires_grad=True)
    _assert_matches_double_precision(interesting, uninteresting, loss_atol=1e-5)


# ---------------------------------------------------------------- expert reconstruction (DE)


def test_expert_reconstruction_hand_case() -> None:
    teacher = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    reconstruction = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    got = expert_reconstruction_loss(teacher, reconstruction)
    torch.testing.assert_close(got, torch.tensor([5.0, 25.0]))


def test_expert_reconstruction_is_zero_exactly_where_equal() -> None:
    gen = torch.Generator().manual_seed(5)
    teacher = torch.randn(6, 4, generator=gen)
    assert torch.equal(expert_reconstruction_loss(teacher, teacher.clone()), torch.zeros(6))
    reconstruction = teacher.clone()
    reconstruction[2, 3] += 1e-2
    got = expert_reconstruction_loss(teacher, reconstruction)
    assert got[2] > 0
    assert torch.equal(got[torch.arange(6) != 2], torch.zeros(5))


# ---------------------------------------------------------------- bidirectional distillation (BD)


def test_bidirectional_matches_bce_by_hand() -> None:
    gen = torch.Generator().manual_seed(6)
    scores = torch.randn(3, 4, generator=gen) * 3
    other = torch.randn(3, 4, generator=gen) * 3
    tau = 5.0
    target = 1 / (1 + torch.exp(-other / tau))
    prob = 1 / (1 + torch.exp(-scores))
    expected = -(target * torch.log(prob) + (1 - target) * torch.log(1 - prob))
    got = bidirectional_distillation_loss(scores, other, tau)
    assert got.shape == scores.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_bidirectional_gradient_reaches_only_scores() -> None:
    scores = torch.randn(10).requires_grad_()
    other = torch.randn(10).requires_grad_()
    bidirectional_distillation_loss(scores, other, 2.0).sum().backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0
    assert other.grad is None


def test_bidirectional_is_minimised_at_softened_other_scores() -> None:
    tau = 5.0
    other = torch.linspace(-20, 20, 9)
    optimum = (other / tau).requires_grad_()
    loss = bidirectional_distillation_loss(optimum, other, tau)
    loss.sum().backward()
    torch.testing.assert_close(optimum.grad, torch.zeros(9), rtol=0, atol=1e-6)
    for shift in (-0.5, 0.5):
        assert (bidirectional_distillation_loss(optimum.detach() + shift, other, tau) > loss).all()


# ---------------------------------------------------------------- Gumbel-softmax


def test_gumbel_softmax_rows_sum_to_one() -> None:
    gen = torch.Generator().manual_seed(7)
    alpha = torch.softmax(torch.randn(64, 5, generator=gen), dim=-1)
    for tau in (10.0, 1.0, 0.1):
        z = gumbel_softmax(alpha, tau, gen)
        assert (z >= 0).all()
        torch.testing.assert_close(z.sum(-1), torch.ones(64))


@pytest.mark.parametrize("tau", [1e-10, 1e-40])
def test_gumbel_softmax_tiny_temperature_is_one_hot(tau: float) -> None:
    gen = torch.Generator().manual_seed(8)
    alpha = torch.softmax(torch.randn(500, 30, generator=gen), dim=-1).requires_grad_()
    # 1e-40 would push unshifted float32 logits past the float32 range (inf - inf = NaN).
    z = gumbel_softmax(alpha, tau, gen)
    assert not torch.isnan(z).any()
    torch.testing.assert_close(z.max(dim=-1).values, torch.ones(500), rtol=0, atol=1e-6)
    torch.testing.assert_close(z.sum(-1), torch.ones(500))
    z[:, 0].sum().backward()
    assert not torch.isnan(alpha.grad).any()


@pytest.mark.parametrize("tau", [1.0, 1e-40])
def test_gumbel_softmax_treats_leading_dimensions_as_rows(tau: float) -> None:
    # alpha [..., M]: a [4, 50, 3] batch is 200 independent rows over the last dimension.
    alpha = torch.softmax(torch.randn(4, 50, 3, generator=torch.Generator().manual_seed(13)), -1)
    batched = gumbel_softmax(alpha, tau, torch.Generator().manual_seed(14))
    rows = gumbel_softmax(alpha.reshape(200, 3), tau, torch.Generator().manual_seed(14))
    torch.testing.assert_close(batched, rows.reshape(4, 50, 3))
    torch.testing.assert_close(batched.sum(-1), torch.ones(4, 50))


def test_gumbel_softmax_keeps_zero_probabilities_finite() -> None:
    # A selection probability that underflowed to 0 must not turn the sample or its gradient into
    # NaN: it gets a negligible weight and a finite gradient.
    gen = torch.Generator().manual_seed(12)
    alpha = torch.tensor([[0.0, 0.6, 0.4]]).repeat(200, 1).requires_grad_()
    for tau in (1.0, 0.1):
        z = gumbel_softmax(alpha, tau, gen)
        assert torch.isfinite(z).all()
        torch.testing.assert_close(z.sum(-1), torch.ones(200))
        assert z[:, 0].mean() < 1e-3
        (z * torch.arange(3.0)).sum().backward()
        assert torch.isfinite(alpha.grad).all()
        alpha.grad = None


def test_gumbel_softmax_is_reproducible_with_a_generator() -> None:
    alpha = torch.full((4, 3), 1 / 3)
    first = gumbel_softmax(alpha, 0.5, torch.Generator().manual_seed(9))
    second = gumbel_softmax(alpha, 0.5, torch.Generator().manual_seed(9))
    third = gumbel_softmax(alpha, 0.5, torch.Generator().manual_seed(10))
    assert torch.equal(first, second)
    assert not torch.equal(first, third)


def _follows(frequencies: torch.Tensor, probabilities: torch.Tensor, draws: int) -> bool:
    """Whether every frequency lies within 5 binomial standard deviations of its probability."""
    sigma = torch.sqrt(probabilities * (1 - probabilities) / draws)
    return bool(((frequencies - probabilities).abs() <= 5 * sigma).all())


def test_gumbel_softmax_argmax_follows_alpha() -> None:
    draws = 20_000
    alpha = torch.tensor([0.5, 0.3, 0.15, 0.05])
    z = gumbel_softmax(alpha.expand(draws, 4), 1.0, torch.Generator().manual_seed(11))
    frequencies = torch.bincount(z.argmax(dim=-1), minlength=4).float() / draws
    assert _follows(frequencies, alpha, draws)
    # The tolerance is tight enough to reject a nearby wrong distribution.
    assert not _follows(frequencies, torch.tensor([0.45, 0.33, 0.16, 0.06]), draws)


# ---------------------------------------------------------------- Distillation Experts module


def _naive_reconstruction(experts: DistillationExperts, student: torch.Tensor, z: torch.Tensor):
    """Reference r = sum_m z_m E_m(s), one expert at a time."""
    result = student.new_zeros(student.shape[0], experts.teacher_dim)
    for m in range(experts.num_experts):
        hidden = torch.relu(student @ experts.w1[m] + experts.b1[m])
        result += z[:, m : m + 1] * (hidden @ experts.w2[m] + experts.b2[m])
    return result


def test_experts_shapes_and_bad_sizes() -> None:
    experts = DistillationExperts(student_dim=4, teacher_dim=7, num_experts=3)
    assert experts.w1.shape == (3, 4, 5)  # hidden = floor((7 + 4) / 2)
    assert experts.w2.shape == (3, 5, 7)
    loss = experts(torch.randn(6, 4), torch.randn(6, 7), tau=1.0)
    assert loss.shape == (6,)
    assert (loss >= 0).all()
    with pytest.raises(ValueError, match="num_experts"):
        DistillationExperts(student_dim=4, teacher_dim=7, num_experts=0)


@pytest.mark.parametrize(
    ("sparse", "dtype", "teacher_dim"),
    [(False, torch.float32, 12), (True, torch.float32, 12), (True, torch.float64, 13)],
)
def test_experts_batched_reconstruction_matches_loop(sparse, dtype, teacher_dim) -> None:
    torch.manual_seed(12)
    experts = DistillationExperts(student_dim=5, teacher_dim=teacher_dim, num_experts=6).to(dtype)
    student = torch.randn(9, 5, dtype=dtype)
    z = torch.softmax(torch.randn(9, 6, dtype=dtype), dim=-1)
    z[2, 1:4] = 0.0  # some weights exactly zero
    z[5] = 0.0  # a row with no expert at all
    torch.testing.assert_close(
        experts.reconstruct(student, z, sparse=sparse),
        _naive_reconstruction(experts, student, z),
        rtol=0,
        atol=1e-5,
    )


def test_experts_tiny_temperature_uses_one_expert() -> None:
    torch.manual_seed(13)
    experts = DistillationExperts(student_dim=5, teacher_dim=12, num_experts=6)
    student, teacher = torch.randn(20, 5), torch.randn(20, 12)
    gen = torch.Generator().manual_seed(14)
    z = experts.selection(teacher, 1e-10, gen)
    chosen = z.argmax(dim=-1)
    one_hot = F.one_hot(chosen, num_classes=6).float()
    torch.testing.assert_close(z, one_hot, rtol=0, atol=1e-6)
    expected = _naive_reconstruction(experts, student, one_hot)
    torch.testing.assert_close(experts.reconstruct(student, z), expected, rtol=0, atol=1e-5)
    # forward with the same noise is the distance to that single expert's output.
    loss = experts(student, teacher, 1e-10, torch.Generator().manual_seed(14))
    torch.testing.assert_close(loss, ((teacher - expected) ** 2).sum(-1), rtol=1e-5, atol=1e-5)


def test_experts_gradients_skip_the_frozen_teacher() -> None:
    torch.manual_seed(15)
    experts = DistillationExperts(student_dim=5, teacher_dim=12, num_experts=4)
    student = torch.randn(8, 5, requires_grad=True)
    teacher = torch.randn(8, 12, requires_grad=True)
    experts(student, teacher, tau=1.0).sum().backward()
    assert teacher.grad is None, "the frozen teacher must receive no gradient"
    assert student.grad is not None and student.grad.abs().sum() > 0
    for name in ("w1", "b1", "w2", "b2", "selector.weight"):
        grad = experts.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_experts_fit_a_fixed_target() -> None:
    torch.manual_seed(16)
    experts = DistillationExperts(student_dim=4, teacher_dim=16, num_experts=5)
    student = torch.nn.Parameter(torch.randn(32, 4))
    teacher = torch.randn(32, 16)
    optimizer = torch.optim.Adam([*experts.parameters(), student], lr=1e-2)
    gen = torch.Generator().manual_seed(17)
    losses = []
    for _ in range(100):
        optimizer.zero_grad()
        loss = experts(student, teacher, tau=1.0, generator=gen).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])


def _reconstruction_and_gradients(
    experts: DistillationExperts, tau: float, sparse: bool
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """DE reconstruction with fixed data and noise, and the gradients that training would use."""
    experts.zero_grad(set_to_none=True)
    gen = torch.Generator().manual_seed(21)
    student = torch.randn(48, 5, generator=gen).requires_grad_()
    teacher = torch.randn(48, 12, generator=gen)
    z = experts.selection(teacher, tau, gen)
    reconstruction = experts.reconstruct(student, z, sparse=sparse)
    expert_reconstruction_loss(teacher, reconstruction).sum().backward()
    gradients = {"student": student.grad}
    gradients.update({name: param.grad for name, param in experts.named_parameters()})
    return z.detach(), reconstruction.detach(), gradients


@pytest.mark.parametrize(("tau", "regime"), [(1.0, "dense"), (0.05, "partial"), (1e-10, "one-hot")])
def test_experts_sparse_path_matches_dense_path(tau: float, regime: str) -> None:
    torch.manual_seed(22)
    experts = DistillationExperts(student_dim=5, teacher_dim=12, num_experts=6)
    z, dense, dense_grads = _reconstruction_and_gradients(experts, tau, sparse=False)
    nonzero_per_row = (z != 0).sum(-1)
    if regime == "dense":
        assert (nonzero_per_row == 6).all()
    elif regime == "partial":
        assert (nonzero_per_row < 6).any() and (nonzero_per_row > 1).any()
    else:
        assert (nonzero_per_row == 1).all()
    z_sparse, sparse, sparse_grads = _reconstruction_and_gradients(experts, tau, sparse=True)
    assert torch.equal(z, z_sparse)
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-5)
    assert sparse_grads.keys() == dense_grads.keys()
    for name, grad in dense_grads.items():
        torch.testing.assert_close(sparse_grads[name], grad, rtol=1e-5, atol=1e-5, msg=name)
    if regime == "partial":  # the selector learns only where z is soft
        assert dense_grads["selector.weight"].abs().sum() > 0


def test_experts_choose_the_path_by_share_of_nonzero_weights(monkeypatch) -> None:
    experts = DistillationExperts(student_dim=3, teacher_dim=4, num_experts=5)
    taken = []
    for path in ("_reconstruct_sparse", "_reconstruct_dense"):
        original = getattr(experts, path)

        def spy(*args, _path=path, _original=original):
            taken.append(_path)
            return _original(*args)

        monkeypatch.setattr(experts, path, spy)
    student = torch.randn(10, 3)
    one_hot = F.one_hot(torch.arange(10) % 5, num_classes=5).float()
    soft = torch.softmax(torch.randn(10, 5), dim=-1)
    experts.reconstruct(student, one_hot)
    experts.reconstruct(student, soft)
    experts.reconstruct(student, soft, sparse=True)
    experts.reconstruct(student, one_hot, sparse=False)
    assert taken == [
        "_reconstruct_sparse",
        "_reconstruct_dense",
        "_reconstruct_sparse",
        "_reconstruct_dense",
    ]
