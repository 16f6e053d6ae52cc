"""BD trains teacher and student together; both are evaluated, saved, exported and resumable."""

from __future__ import annotations

import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.utils import init_logger

from recbole_kd.quick_start import build, run_recbole_kd
from recbole_kd.utils import get_trainer
from tests.conftest import FAST, make_config, pair_overrides

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
    trainer = get_trainer(config["MODEL_TYPE"], "BD")(config, model)
    teacher_before, student_before = snapshot(model.teacher), snapshot(model.student)
    trainer.fit(train_data, valid_data, saved=False)
    assert changed(model.teacher, teacher_before) and changed(model.student, student_before)
    for role in ("teacher", "student"):
        assert trainer.tracks[role].best_result is not None
    assert all(torch.isfinite(torch.tensor(v)) for v in trainer.train_loss_dict.values())


def test_teacher_steps_first_and_student_targets_precede_it(small_data):
    config = make_config("BD", small_data)
    init_logger(config)
    train_data, _, _, model = build(config)
    trainer = get_trainer(config["MODEL_TYPE"], "BD")(config, model)
    model.on_epoch_start(0)
    interaction = next(iter(train_data))
    batch = model.draw(interaction)
    with torch.no_grad():
        before = model.teacher_net.score(batch.user, batch.for_student)
    assert torch.equal(batch.teacher_targets, before)
    optimizer = trainer.optimizers["teacher"]
    optimizer.zero_grad()
    sum(model.losses("teacher", batch)).backward()
    optimizer.step()
    with torch.no_grad():
        after = model.teacher_net.score(batch.user, batch.for_student)
    assert not torch.equal(after, before)  # the teacher moved; the student's targets did not
    assert torch.equal(batch.teacher_targets, before)
    # Each model's BD loss reaches only its own parameters.
    model.zero_grad()
    model.losses("student", batch)[1].backward()
    assert all(p.grad is None or not p.grad.any() for p in model.teacher.parameters())


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
    result = run_recbole_kd("BD", config_dict={**FAST, "epochs": 2, "data_path": small_data})
    for key in ("test_result", "best_valid_result", "teacher_test_result",
                "teacher_best_valid_result", "teacher_file", "student_file",
                "teacher_alone_test_result", "student_alone_test_result"):
        assert result[key], key
    # The warm-ups are the models trained alone: their metrics differ from BD's.
    assert result["student_alone_test_result"] != result["test_result"]
    teacher = torch.load(result["teacher_file"], weights_only=False)
    student = torch.load(result["student_file"], weights_only=False)
    assert teacher["config"]["model"] == "BPR" and teacher["config"]["embedding_size"] == 32
    assert student["config"]["embedding_size"] == 8


def test_resumed_bd_continues_both_models_and_optimizers(small_data):
    """Four epochs in one go equal two epochs, a checkpoint, and two more in a new trainer."""
    # Warm-ups of their own length, so all three runs share them (the cache is reused).
    settings = {"bd_update_epochs": 3, "epochs": 4, "stopping_step": 100,
                "teacher_config": {"embedding_size": 32, "epochs": 1},
                "student_config": {"embedding_size": 8, "epochs": 1}}
    config = make_config("BD", small_data, **settings)
    init_logger(config)
    train_data, valid_data, _, model = build(config)
    trainer = get_trainer(config["MODEL_TYPE"], "BD")(config, model)
    trainer.fit(train_data, valid_data, saved=True)
    straight = snapshot(model)

    config = make_config("BD", small_data, **{**settings, "epochs": 2})
    train_data, valid_data, _, model = build(config)
    trainer = get_trainer(config["MODEL_TYPE"], "BD")(config, model)
    trainer.fit(train_data, valid_data, saved=True)
    checkpoint = trainer.saved_model_file

    config = make_config("BD", small_data, **settings)
    train_data, valid_data, _, model = build(config)
    trainer = get_trainer(config["MODEL_TYPE"], "BD")(config, model)
    trainer.resume_checkpoint(checkpoint)
    assert trainer.start_epoch == 2
    trainer.fit(train_data, valid_data, saved=True)
    resumed = snapshot(model)
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key
