"""BD trains teacher and student together; both are evaluated, saved, exported and resumable."""

from __future__ import annotations

import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.trainer import Trainer
from recbole.utils import init_logger

from recbole_kd.quick_start import load_data_and_model, run_recbole_kd
from tests.conftest import build, fast, make_config, pair_overrides, trainer_for

BACKBONES = ("BPR", "LightGCN", "NeuMF")


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def changed(module, before) -> bool:
    return any(not torch.equal(v, before[k]) for k, v in module.state_dict().items())


@pytest.mark.parametrize("teacher", BACKBONES)
@pytest.mark.parametrize("student", BACKBONES)
def test_one_bd_epoch_changes_both_models(small_data, teacher, student):
    config = make_config("BD", small_data, **pair_overrides(teacher, student))
    init_logger(config)
    train_data, valid_data, _, model = build(config)
    trainer = trainer_for(config, model)
    teacher_before, student_before = snapshot(model.teacher), snapshot(model.student)
    trainer.fit(train_data, valid_data, saved=False)
    assert changed(model.teacher, teacher_before) and changed(model.student, student_before)
    for role in ("teacher", "student"):
        assert trainer.tracks[role].best_result is not None
    assert all(torch.isfinite(torch.tensor(v)) for v in trainer.train_loss_dict.values())


def bd_trainer(small_data, **overrides):
    """(trainer, one training batch) of a BD run whose ranks were refreshed for epoch 0."""
    config = make_config("BD", small_data, **overrides)
    init_logger(config)
    train_data, _, _, model = build(config)
    trainer = trainer_for(config, model)
    model.on_epoch_start(0)
    return trainer, next(iter(train_data))


def record_bd_terms(monkeypatch, model) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(role, items, targets) of every BD loss the model computes, in call order."""
    from recbole_kd.model import bd

    calls, roles = [], []
    losses, loss_fn = model.losses, bd.bidirectional_distillation_loss

    def losses_of(role, batch):
        roles.append((role, getattr(batch, f"for_{role}")))
        return losses(role, batch)

    def recorded(scores, other_scores, tau):
        role, items = roles[-1]
        calls.append((role, items.clone(), other_scores.detach().clone()))
        return loss_fn(scores, other_scores, tau)

    monkeypatch.setattr(model, "losses", losses_of)
    monkeypatch.setattr(bd, "bidirectional_distillation_loss", recorded)
    return calls


def test_each_role_learns_on_its_own_pool_through_the_trainer(small_data, monkeypatch):
    trainer, interaction = bd_trainer(small_data)
    sampler = trainer.model.sampler
    # Every draw of the student's direction is item 1, of the teacher's item 2.
    sampler.pool_student.fill_(1)
    sampler.pool_teacher.fill_(2)
    calls = record_bd_terms(monkeypatch, trainer.model)
    trainer._train_epoch([interaction], epoch_idx=1)  # no refresh at epoch 1
    assert [role for role, _, _ in calls] == ["teacher", "student"]  # the teacher steps first
    assert (calls[0][1] == 2).all() and (calls[1][1] == 1).all()


def test_student_targets_are_the_teacher_scores_before_its_step(small_data, monkeypatch):
    # A large teacher learning rate, so that its step moves its scores well beyond rounding.
    trainer, interaction = bd_trainer(small_data, teacher_learning_rate=0.5)
    model = trainer.model
    before = snapshot(model.teacher)
    calls = record_bd_terms(monkeypatch, model)
    trainer._train_epoch([interaction], epoch_idx=1)
    (_, _, _), (role, items, targets) = calls
    assert role == "student"
    user = interaction[model.USER_ID]
    with torch.no_grad():
        after = model.teacher_net.score(user, items)
        model.teacher.load_state_dict(before)
        expected = model.teacher_net.score(user, items)
    assert not torch.allclose(after, expected)  # the teacher's step did move these scores
    assert torch.equal(targets, expected)


def test_each_model_s_bd_loss_reaches_only_its_own_parameters(small_data):
    trainer, interaction = bd_trainer(small_data)
    model = trainer.model
    batch = model.draw(interaction)
    for role, other in (("student", model.teacher), ("teacher", model.student)):
        model.zero_grad()
        model.losses(role, batch)[1].backward()
        assert all(p.grad is None or not p.grad.any() for p in other.parameters())
        assert any(p.grad is not None and p.grad.any() for p in getattr(model, role).parameters())


def test_bpr_loss_and_scores_in_one_pass_equal_recbole_s_own(small_data, monkeypatch):
    config = make_config("BD", small_data)
    init_logger(config)
    train_data, _, _, model = build(config)
    model.on_epoch_start(0)
    batch = model.draw(next(iter(train_data)))
    bpr = model.teacher_net.model

    def loss_scores_and_gradients(one_pass: bool):
        bpr.zero_grad()
        if one_pass:
            base, scores = model.teacher_net.base_loss_and_scores(
                batch.user, batch.pos, batch.neg, batch.for_teacher)
        else:
            base = bpr.calculate_loss(Interaction(
                {bpr.USER_ID: batch.user, bpr.ITEM_ID: batch.pos, bpr.NEG_ITEM_ID: batch.neg}))
            scores = model.teacher_net.score(batch.user, batch.for_teacher)
        (base + scores.sigmoid().sum()).backward()
        return [base, scores] + [p.grad.clone() for p in bpr.parameters()]

    expected = loss_scores_and_gradients(one_pass=False)
    # The one pass must not go through RecBole's calculate_loss at all.
    monkeypatch.setattr(bpr, "calculate_loss", lambda _: pytest.fail("calculate_loss called"))
    for got, want in zip(loss_scores_and_gradients(one_pass=True), expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_bd_reports_and_exports_both_models(small_data):
    result = run_recbole_kd("BD", config_dict={**fast("BD"), "epochs": 2, "data_path": small_data})
    metrics = set(result["test_result"])
    for key in ("teacher_test_result", "teacher_alone_test_result", "student_alone_test_result"):
        assert set(result[key]) == metrics, key
    # The warm-ups are the models trained alone: BD moved both away from them.
    assert result["student_alone_test_result"] != result["test_result"]
    assert result["teacher_alone_test_result"] != result["teacher_test_result"]
    # Each export is its own plain model, and evaluates to the metrics the run reported.
    for role, key, size in (("teacher", "teacher_test_result", 32),
                            ("student", "test_result", 8)):
        config, model, _, _, _, test_data = load_data_and_model(result[f"{role}_file"])
        assert config["model"] == "BPR" and config["embedding_size"] == size
        config["state"] = "ERROR"
        reloaded = Trainer(config, model).evaluate(test_data, load_best_model=False)
        assert dict(reloaded) == dict(result[key]), role
