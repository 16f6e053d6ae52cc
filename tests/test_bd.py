"""BD trains teacher and student together; both are evaluated, saved, exported and resumable."""

from __future__ import annotations

import logging
import re

import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.trainer import Trainer
from recbole.utils import init_logger

from recbole_kd.quick_start import load_data_and_model, run_recbole_kd
from tests.conftest import assert_same, build, fast, make_config, pair_overrides, trainer_for

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


def bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of ``logits`` against probabilities ``targets``, by its formula."""
    p = torch.sigmoid(logits.double())
    return -(targets * p.log() + (1 - targets) * (1 - p).log())


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_bd_losses_equal_their_formula(small_data, role):
    # A small tau, so that the targets are far from 1/2 and the loss depends on them.
    trainer, interaction = bd_trainer(small_data, bd_weight_teacher=0.3, bd_weight_student=0.7,
                                      bd_tau=0.1, bd_items_per_positive=2)
    model = trainer.model
    batch = model.draw(interaction)
    base, bd = model.losses(role, batch)
    net, other = ((model.teacher_net, model.student_net) if role == "teacher"
                  else (model.student_net, model.teacher_net))
    items = getattr(batch, f"for_{role}")
    assert items.shape == (len(batch.user), 2)
    with torch.no_grad():
        scores = net.score(batch.user, items)
        targets = torch.sigmoid(other.score(batch.user, items).double() / 0.1)
        expected = {"teacher": 0.3, "student": 0.7}[role] * bce(scores, targets).sum()
        own = net.base_loss(batch.user, batch.pos, batch.neg)
    torch.testing.assert_close(bd.double(), expected / len(batch.user), rtol=1e-6, atol=0)
    torch.testing.assert_close(base, own, rtol=1e-5, atol=0)


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_bd_sampled_as_negative_makes_the_first_draw_the_negative(small_data, role):
    trainer, interaction = bd_trainer(small_data, bd_sampled_as_negative=True,
                                      bd_items_per_positive=2)
    model = trainer.model
    batch = model.draw(interaction)
    items = getattr(batch, f"for_{role}")
    assert not torch.equal(items[:, 0], items[:, 1])
    base, _ = model.losses(role, batch)
    with torch.no_grad():
        expected = getattr(model, f"{role}_net").base_loss(batch.user, batch.pos, items[:, 0])
    torch.testing.assert_close(base, expected, rtol=1e-5, atol=0)


def test_bd_draw_takes_each_role_s_pool_in_order_and_the_teacher_s_scores(small_data):
    trainer, interaction = bd_trainer(small_data, bd_items_per_positive=3)
    model = trainer.model
    sampler = model.sampler
    user = interaction[model.USER_ID]
    expected = [sampler.next_items(user) for _ in range(3)]
    sampler.pointers.zero_()  # the same draws again
    batch = model.draw(interaction)
    assert torch.equal(batch.for_student, torch.stack([d[0] for d in expected], dim=1))
    assert torch.equal(batch.for_teacher, torch.stack([d[1] for d in expected], dim=1))
    assert torch.equal(batch.neg, interaction[model.NEG_ITEM_ID])
    assert torch.equal(batch.pos, interaction[model.ITEM_ID])
    with torch.no_grad():
        assert torch.equal(batch.teacher_targets, model.teacher_net.score(user, batch.for_student))


def test_bd_refreshes_its_ranks_every_update_epochs(small_data, monkeypatch):
    config = make_config("BD", small_data, bd_update_epochs=3)
    init_logger(config)
    _, _, _, model = build(config)
    refreshed = []
    refresh = model.refresh_ranks
    monkeypatch.setattr(model, "refresh_ranks", lambda: refreshed.append(epoch) or refresh())
    for epoch in range(8):
        model.on_epoch_start(epoch)
    assert refreshed == [0, 3, 6]


@pytest.mark.parametrize("training", [True, False])
def test_bd_rank_refresh_keeps_the_mode_and_sends_no_gradient(small_data, training):
    trainer, _ = bd_trainer(small_data)
    model = trainer.model
    model.train(training)
    model.refresh_ranks()
    assert model.training is training and model.teacher.training is training


def test_bd_rank_refresh_ranks_without_cached_embeddings_and_leaves_none(small_data,
                                                                         monkeypatch):
    trainer, _ = bd_trainer(small_data, **pair_overrides("LightGCN", "LightGCN"))
    model = trainer.model
    for role in trainer.ROLES:  # vectors cached by an earlier scoring, maybe of older weights
        getattr(model, f"{role}_net").all_item_scores(torch.arange(3))
        assert getattr(model, role).restore_user_e is not None
    seen, refresh = [], model.sampler.refresh

    def refresh_seeing_the_caches(*args, **kwargs):
        seen.append([getattr(model, role).restore_user_e is None for role in trainer.ROLES])
        return refresh(*args, **kwargs)

    monkeypatch.setattr(model.sampler, "refresh", refresh_seeing_the_caches)
    model.refresh_ranks()  # LightGCN caches all users' and items' vectors while ranking
    assert seen == [[True, True]]  # the ranks come from the current weights
    for role in trainer.ROLES:
        assert getattr(model, role).restore_user_e is None, role
        assert getattr(model, role).restore_item_e is None, role


def test_bd_draws_continue_from_a_state_dict(small_data):
    config = make_config("BD", small_data)
    init_logger(config)
    train_data, _, _, fresh = build(config)
    untouched = {k: v.clone() if torch.is_tensor(v) else v for k, v in fresh.state_dict().items()}
    fresh.on_epoch_start(0)
    fresh.draw(next(iter(train_data)))  # pointers moved
    _, _, _, resumed = build(config)
    resumed.load_state_dict(fresh.state_dict())
    _, _, _, restarted = build(config)
    restarted.load_state_dict(untouched)  # a state taken before any refresh holds no sampler
    assert restarted.sampler is None
    interaction = next(iter(train_data))
    first, second = fresh.draw(interaction), resumed.draw(interaction)
    assert torch.equal(first.for_student, second.for_student)
    assert torch.equal(first.for_teacher, second.for_teacher)


def test_bd_loss_names_follow_the_backbones(small_data):
    config = make_config("BD", small_data, **pair_overrides("NeuMF", "BPR"))
    _, _, _, model = build(config)
    assert model.loss_names == ["teacher_neumf_loss", "teacher_bd_loss", "student_bpr_loss",
                                "student_bd_loss"]
    with pytest.raises(RuntimeError, match="BDTrainer"):
        model.calculate_loss(None)


# ----- BDTrainer's step -----------------------------------------------------------------------


def recorded_batches(monkeypatch, model) -> list:
    """The BDBatch of every step, in order."""
    batches, draw = [], model.draw
    monkeypatch.setattr(model, "draw", lambda interaction: batches.append(draw(interaction))
                        or batches[-1])
    return batches


def test_bd_step_is_one_sgd_step_of_each_model_s_own_plus_bd_loss(small_data, monkeypatch):
    trainer, interaction = bd_trainer(small_data, learner="sgd", learning_rate=0.5,
                                      teacher_learning_rate=2.0, weight_decay=0.0,
                                      bd_weight_teacher=3.0, bd_weight_student=3.0)
    model = trainer.model
    before = {role: snapshot(getattr(model, role)) for role in trainer.ROLES}
    batches = recorded_batches(monkeypatch, model)
    trainer._train_epoch([interaction], epoch_idx=1)
    after = {role: snapshot(getattr(model, role)) for role in trainer.ROLES}
    (batch,) = batches
    for role in trainer.ROLES:
        getattr(model, role).load_state_dict(before[role])
    for role, lr in (("teacher", 2.0), ("student", 0.5)):
        module = getattr(model, role)
        module.zero_grad()
        base, bd = model.losses(role, batch)
        (base + bd).backward()
        grads = {name: p.grad for name, p in module.named_parameters()}
        for name, value in after[role].items():
            step = grads[name] if grads[name] is not None else torch.zeros_like(value)
            torch.testing.assert_close(value, before[role][name] - lr * step,
                                       rtol=1e-5, atol=1e-7, msg=f"{role} {name}")
        # The BD term matters in this check: without it the step is another one.
        module.zero_grad()
        model.losses(role, batch)[0].backward()
        assert any(not torch.allclose(p.grad, grads[n]) for n, p in module.named_parameters()
                   if p.grad is not None)


def test_bd_epoch_returns_the_sum_of_each_term_over_its_batches(small_data, monkeypatch, capsys):
    trainer, interaction = bd_trainer(small_data)
    model = trainer.model
    terms, losses = [], model.losses

    def recorded(role, batch):
        base, bd = losses(role, batch)
        terms.append((base.item(), bd.item()))
        return base, bd

    monkeypatch.setattr(model, "losses", recorded)
    totals = trainer._train_epoch([interaction, interaction], epoch_idx=1)
    expected = [sum(t[0] for t in terms[0::2]), sum(t[1] for t in terms[0::2]),
                sum(t[0] for t in terms[1::2]), sum(t[1] for t in terms[1::2])]
    assert len(terms) == 4 and isinstance(totals, tuple)
    assert list(totals) == pytest.approx(expected, rel=1e-12)
    # A progress bar only with show_progress.
    assert capsys.readouterr().err == ""
    trainer._train_epoch([interaction], epoch_idx=1, show_progress=True)
    assert "Train     1" in capsys.readouterr().err


@pytest.mark.parametrize("term", range(4))
def test_bd_step_stops_on_a_non_finite_term_naming_it(small_data, monkeypatch, term):
    from recbole_kd.errors import TrainingError

    trainer, interaction = bd_trainer(small_data)
    model = trainer.model
    losses = model.losses

    def with_nan(role, batch):
        values = list(losses(role, batch))
        index = 2 * trainer.ROLES.index(role)
        if index <= term < index + 2:
            values[term - index] = values[term - index] * float("nan")
        return tuple(values)

    monkeypatch.setattr(model, "losses", with_nan)
    name = model.loss_names[term]
    with pytest.raises(TrainingError, match=f"'{name}' is nan"):
        trainer._train_epoch([interaction], epoch_idx=1)


def test_bd_optimizers_take_each_role_s_learning_rate_and_weight_decay(small_data):
    config = make_config("BD", small_data, learning_rate=0.01, weight_decay=0.001,
                         teacher_learning_rate=0.5, student_weight_decay=0.25)
    init_logger(config)
    _, _, _, model = build(config)
    trainer = trainer_for(config, model)
    for role, lr, decay in (("teacher", 0.5, 0.001), ("student", 0.01, 0.25)):
        (group,) = trainer.optimizers[role].param_groups
        assert (group["lr"], group["weight_decay"]) == (lr, decay), role
        assert {id(p) for p in group["params"]} == {id(p) for p in
                                                   getattr(model, role).parameters()}
    assert trainer.optimizer is trainer.optimizers["student"]


# ----- BDTrainer's evaluation and its loop -----------------------------------------------------


def scripted_evaluation(monkeypatch, trainer, scores: dict[str, list[float]]) -> list[bool]:
    """``evaluate_role`` returns the next of ``scores[role]`` as the validation metric; the
    list returned receives the ``show_progress`` of each call."""
    left = {role: list(values) for role, values in scores.items()}
    shown = []

    def evaluate_role(data, role, show_progress=False):
        shown.append(show_progress)
        return {trainer.valid_metric: left[role].pop(0), "role": role}

    monkeypatch.setattr(trainer, "evaluate_role", evaluate_role)
    return shown


@pytest.mark.parametrize("bigger", [True, False])
def test_bd_validation_tracks_each_model_s_best_and_stops_when_both_stall(small_data, caplog,
                                                                          monkeypatch, bigger):
    config = make_config("BD", small_data, stopping_step=1)
    config["valid_metric_bigger"] = bigger  # RecBole sets it from the metric: a smaller-is-better one
    init_logger(config)
    trainer = trainer_for(config, build(config)[-1])
    sign = 1 if bigger else -1
    scores = {"teacher": [0.1, 0.2, 0.15, 0.1, 0.1], "student": [0.3, 0.25, 0.4, 0.3, 0.3]}
    scripted_evaluation(monkeypatch, trainer, {r: [sign * s for s in v] for r, v in scores.items()})
    recorded = []
    monkeypatch.setattr(trainer.tensorboard, "add_scalar",
                        lambda tag, value, step: recorded.append((tag, value, step)))
    model = trainer.model
    first = {role: next(getattr(model, role).parameters()) for role in trainer.ROLES}
    outcomes = []
    for epoch in range(5):
        with torch.no_grad():
            for parameter in first.values():
                parameter.fill_(epoch)  # each epoch's weights, recognisable in the best states
        with caplog.at_level(logging.INFO):
            outcomes.append(trainer._validate(None, epoch, verbose=epoch == 4,
                                              show_progress=False))
        logged = caplog.text
        caplog.clear()
        # Only a verbose validation logs each model's evaluation.
        assert ("epoch 4 evaluating teacher" in logged) is (epoch == 4), logged
        assert ("epoch 4 evaluating student" in logged) is (epoch == 4), logged
        if epoch == 4:  # the scripted evaluation takes no time
            assert float(re.search(r"time: ([0-9.]+)s", logged).group(1)) < 0.5, logged
    student_best = [sign * s for s in (0.3, 0.3, 0.4, 0.4, 0.4)]
    assert outcomes == [(True, False, student_best[0]), (True, False, student_best[1]),
                        (True, False, student_best[2]), (False, False, student_best[3]),
                        (False, True, student_best[4])]
    best = {"teacher": 1, "student": 2}
    for role, epoch in best.items():
        track = trainer.tracks[role]
        assert track.best_epoch == epoch and track.best_score == sign * scores[role][epoch]
        assert track.best_result == {trainer.valid_metric: track.best_score, "role": role}
        name = next(iter(getattr(model, role).state_dict()))
        assert (track.best_state[name] == epoch).all()
    assert trainer.best_valid_score == sign * 0.4 and trainer.cur_step == 2
    assert trainer.best_valid_result == trainer.tracks["student"].best_result
    assert trainer.best_valid_results() == {r: trainer.tracks[r].best_result for r in best}
    assert recorded[:2] == [("Valid_score/teacher", sign * 0.1, 0),
                            ("Valid_score/student", sign * 0.3, 0)]
    state = trainer._best_state_dict()
    for role, epoch in best.items():
        name = next(iter(getattr(model, role).state_dict()))
        assert (state[f"{role}.{name}"] == epoch).all()
    # Evaluating with the best models puts each one's best weights back.
    shown = scripted_evaluation(monkeypatch, trainer, {"teacher": [0.5], "student": [0.6]})
    assert trainer.evaluate(None)["role"] == "student"
    assert shown == [False, False]  # no progress bar unless asked
    for role, epoch in best.items():
        assert (first[role] == epoch).all()
    with torch.no_grad():
        for parameter in first.values():
            parameter.fill_(9)
    scripted_evaluation(monkeypatch, trainer, {"teacher": [0.5], "student": [0.6]})
    trainer.evaluate_roles(None)
    for role, epoch in best.items():
        assert (first[role] == epoch).all()


def test_bd_without_a_best_model_keeps_the_current_weights(small_data, monkeypatch):
    trainer, _ = bd_trainer(small_data)
    model = trainer.model
    current = {role: snapshot(getattr(model, role)) for role in trainer.ROLES}
    state = trainer._best_state_dict()
    for role in trainer.ROLES:
        for name, value in current[role].items():
            assert torch.equal(state[f"{role}.{name}"], value)
    shown = scripted_evaluation(monkeypatch, trainer, {"teacher": [0.5], "student": [0.6]})
    results = trainer.evaluate_roles(None)
    assert shown == [False, False]  # no progress bar unless asked
    assert {r: results[r]["role"] for r in results} == {"teacher": "teacher", "student": "student"}
    for role in trainer.ROLES:
        assert not changed(getattr(model, role), current[role])


@pytest.mark.parametrize("eval_step,valid,saved,stop_at,validated", [
    (2, True, True, None, [1, 3]),
    (3, True, True, None, [2]),
    (1, True, True, 2, [0, 1, 2]),
    (0, True, True, None, []),
    (1, False, True, None, []),
    (2, True, False, None, [1, 3]),
])
def test_bd_fit_validates_saves_and_stops_on_schedule(small_data, monkeypatch, caplog, eval_step,
                                                      valid, saved, stop_at, validated):
    config = make_config("BD", small_data, epochs=5, eval_step=eval_step)
    init_logger(config)
    train_data, valid_data, _, model = build(config)
    trainer = trainer_for(config, model)
    trained, checked, best_saved, resume_saved, called = [], [], [], [], []
    monkeypatch.setattr(trainer, "_train_epoch", lambda data, epoch, show_progress=False:
                        trained.append(epoch) or (1.0, 2.0, 3.0, 4.5))
    def validate(data, epoch, verbose, show_progress):
        checked.append(epoch)
        if epoch == stop_at and verbose:  # as BDTrainer._validate logs it
            trainer.logger.info("Finished BD: best teacher at epoch 1, best student at epoch 2")
        return epoch == 1, epoch == stop_at, 0.7

    monkeypatch.setattr(trainer, "_validate", validate)
    monkeypatch.setattr(trainer, "_save_checkpoint",
                        lambda epoch, verbose=True: best_saved.append(epoch))
    monkeypatch.setattr(trainer, "_save_resume_point", resume_saved.append)
    trainer.tracks["student"].best_score, trainer.tracks["student"].best_result = 0.7, {"a": 1}
    trainer.tracks["teacher"].best_epoch, trainer.tracks["student"].best_epoch = 1, 2
    with caplog.at_level(logging.INFO):
        result = trainer.fit(train_data, valid_data if valid else None, saved=saved,
                             callback_fn=lambda epoch, score: called.append((epoch, score)))
    # Verbose unless told otherwise: each epoch's losses, and the best epochs when it stops.
    assert "epoch 0 training" in caplog.text
    assert ("Finished BD: best teacher at epoch 1, best student at epoch 2" in caplog.text) is (
        stop_at is not None)
    assert result == (0.7, {"a": 1})
    assert (trainer.best_valid_score, trainer.best_valid_result) == result
    assert trained == list(range(5 if stop_at is None else stop_at + 1))
    assert trainer.train_loss_dict == {epoch: 10.5 for epoch in trained}
    assert checked == validated
    # Without validation every epoch's weights are the model (RecBole's rule); a resume point
    # follows every epoch, validated or not.
    selects = valid and eval_step > 0
    expected = ([1] if 1 in validated else []) if selects else trained
    assert best_saved == (expected if saved else [])
    assert resume_saved == (trained if saved else [])
    assert called == [(epoch, 0.7) for epoch in validated]


def test_bd_resume_point_holds_both_optimizers_and_both_tracks(small_data):
    trainer, interaction = bd_trainer(small_data)
    trainer._train_epoch([interaction], epoch_idx=1)  # both optimizers have a state
    trainer.tracks["teacher"].best_epoch, trainer.tracks["student"].best_score = 3, 0.5
    trainer._save_resume_point(4)
    resumed, _ = bd_trainer(small_data)
    resumed.resume_checkpoint(trainer.resume_file)
    assert resumed.start_epoch == 5
    assert resumed.tracks == trainer.tracks
    for role in trainer.ROLES:
        assert_same(resumed.optimizers[role].state_dict(), trainer.optimizers[role].state_dict())
        assert resumed.optimizers[role].state_dict()["state"], role
