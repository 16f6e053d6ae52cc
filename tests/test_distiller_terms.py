"""Each method's whole distillation term, as its distiller computes it in a training step, against
a hand computation in float64 from the models' own scores: every weight, sign, temperature and
reduction in play (the pure loss functions are tested on their own elsewhere)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.test_competitors import build_model, first_batch


def scores64(net, users, items) -> torch.Tensor:
    with torch.no_grad():
        return net.score(users, items).double()


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def test_rd_term_by_hand(small_data):
    config, train_data, _, model = build_model("RD", small_data, rd_weight=0.6,
                                               rd_position_sharpness=2.0, rd_top_k=4,
                                               rd_dynamic_start_epoch=5)
    model.on_epoch_start(0)  # before the dynamic start: position weights alone
    d = model.distillers[0]
    user, pos, neg = (t[:32] for t in first_batch(config, train_data))
    with torch.no_grad():
        got = d(user, pos, neg).item()
    scores = scores64(d.student_net, user, d.top[user])
    raw = [math.exp(-r / 2.0) for r in range(1, 5)]
    weights = [w / sum(raw) for w in raw]
    hand = sum(-weights[r] * log_sigmoid(scores[b, r].item())
               for b in range(len(user)) for r in range(4))
    assert got == pytest.approx(0.6 * hand / len(user), rel=1e-5)


def test_cd_term_by_hand(small_data):
    config, train_data, _, model = build_model("CD", small_data, cd_weight=0.4,
                                               cd_label_temperature=2.0, cd_label_shift=-0.5)
    model.on_epoch_start(0)
    d = model.distillers[0]
    user, pos, neg = (t[:32] for t in first_batch(config, train_data))
    with torch.no_grad():
        got = d(user, pos, neg).item()
    student = scores64(d.student_net, user, d.samples[user])
    teacher = d.teacher_scores[user].double()
    hand = 0.0
    for b in range(len(user)):
        for j in range(student.shape[1]):
            q = 1 / (1 + math.exp(-(teacher[b, j].item() - 0.5) / 2.0))
            s = student[b, j].item()
            hand -= q * log_sigmoid(s) + (1 - q) * log_sigmoid(-s)
    assert got == pytest.approx(0.4 * hand / len(user), rel=1e-5)


@pytest.mark.parametrize("side", ["user", "item"])
def test_dcd_term_by_hand(small_data, side):
    config, train_data, _, model = build_model("DCD", small_data, dcd_weight_user=0.3,
                                               dcd_weight_item=0.2, dcd_samples=3)
    model.on_epoch_start(0)
    d = model.distillers[0 if side == "user" else 1]
    user, pos, neg = (t[:32] for t in first_batch(config, train_data))
    state = d.generator.get_state()
    with torch.no_grad():
        got = d(user, pos, neg).item()
    d.generator.set_state(state)  # the same draws again, for the hand computation
    anchors = user.unique() if side == "user" else pos.unique()
    above, below = d.draw(anchors)
    entries = torch.cat([above, below], dim=1)
    if side == "user":
        scores = scores64(d.student_net, anchors, entries)
    else:
        with torch.no_grad():
            scores = d.student_net.user_list_scores(entries, anchors).double()
    hand = 0.0
    for row in scores.tolist():
        good, bad = row[:3], row[3:]
        for k in range(3):  # Plackett-Luce: the k-th above-entry over the rest and all below
            rest = good[k:] + bad
            top = max(rest)
            hand -= good[k] - (top + math.log(sum(math.exp(v - top) for v in rest)))
    weight = 0.3 if side == "user" else 0.2
    assert got == pytest.approx(weight * hand / len(user), rel=1e-5)


def test_bd_terms_by_hand(small_data):
    from tests.conftest import build, make_config

    config = make_config("BD", small_data, bd_weight_teacher=0.4, bd_weight_student=0.7,
                         bd_tau=2.0)
    train_data, _, _, model = build(config)
    model.on_epoch_start(0)
    model.eval()  # no dropout: the hand computation sees the same scores
    batch = model.draw(next(iter(train_data)))
    for role, other, weight in (("teacher", "student", 0.4), ("student", "teacher", 0.7)):
        items = getattr(batch, f"for_{role}")
        with torch.no_grad():
            bd = model.losses(role, batch)[1].item()
        scores = scores64(getattr(model, f"{role}_net"), batch.user, items)
        targets = scores64(getattr(model, f"{other}_net"), batch.user, items)
        hand = 0.0
        for s, t in zip(scores.flatten().tolist(), targets.flatten().tolist()):
            q = 1 / (1 + math.exp(-t / 2.0))
            hand -= q * log_sigmoid(s) + (1 - q) * log_sigmoid(-s)
        assert bd == pytest.approx(weight * hand / len(batch.user), rel=1e-5), role
