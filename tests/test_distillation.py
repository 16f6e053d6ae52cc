"""DE, RRD and DERRD train with BPR, LightGCN and NeuMF as teacher and student."""

from __future__ import annotations

import math
import re

import pytest
import torch
from recbole.utils import init_logger

from recbole_kd.model.backbone import Backbone
from tests.conftest import build, make_config, pair_overrides, trainer_for

BACKBONES = ("BPR", "LightGCN", "NeuMF")
ALL_PAIRS = [(t, s) for t in BACKBONES for s in BACKBONES]
SOME_PAIRS = [("BPR", "BPR"), ("LightGCN", "BPR"), ("NeuMF", "NeuMF")]


def train_one_epoch(model_name: str, small_data: str, **overrides):
    config = make_config(model_name, small_data, **overrides)
    init_logger(config)
    train_data, valid_data, _, model = build(config)
    # (teacher, its weights): kept here, as the model releases its teacher once prepared.
    teacher_before = model.teacher, {k: v.clone() for k, v in model.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in model.student.state_dict().items()}
    trainer = trainer_for(config, model)
    model.on_epoch_start(0)
    batch = next(iter(train_data)).to(config["device"])
    first_losses = model.calculate_loss(batch)
    trainer.fit(train_data, valid_data, saved=False)
    return model, first_losses, teacher_before, student_before


def check_trained(model, losses, teacher_before, student_before):
    teacher, teacher_before = teacher_before
    assert len(losses) == 1 + len(model.distillers)
    for loss in losses:
        assert math.isfinite(loss.item())
    for loss in losses[1:]:
        assert loss.item() > 0, "a distillation term is zero: it teaches nothing"
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), f"teacher weight {key} changed"
    changed = [not torch.equal(v, student_before[k]) for k, v in model.student.state_dict().items()]
    assert any(changed), "the student did not learn"
    assert not any(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize("teacher,student", ALL_PAIRS)
def test_derrd_trains_with_every_backbone_pair(small_data, teacher, student):
    check_trained(*train_one_epoch("DERRD", small_data, **pair_overrides(teacher, student)))


@pytest.mark.parametrize("method", ["DE", "RRD"])
@pytest.mark.parametrize("teacher,student", SOME_PAIRS)
def test_de_and_rrd_train(small_data, method, teacher, student):
    model, losses, teacher_before, student_before = train_one_epoch(
        method, small_data, **pair_overrides(teacher, student)
    )
    check_trained(model, losses, teacher_before, student_before)
    assert model.loss_names[1] == f"{method.lower()}_loss"


def test_teacher_is_outside_the_optimizer_and_stays_in_eval_mode(small_data):
    config = make_config("DERRD", small_data, **pair_overrides("NeuMF", "BPR"))
    init_logger(config)
    _, _, _, model = build(config)
    trainer = trainer_for(config, model)
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized.isdisjoint(id(p) for p in model.teacher.parameters())
    assert set(map(id, model.student.parameters())) <= optimized
    model.train()
    assert not model.teacher.training and model.student.training


def test_de_temperature_anneals_geometrically(small_data):
    config = make_config("DE", small_data, epochs=10, de_tau_start=1.0, de_tau_end=1e-4)
    init_logger(config)
    _, _, _, model = build(config)
    distiller = model.distillers[0]
    taus = []
    for epoch in (0, 5, 10, 20):
        model.on_epoch_start(epoch)
        taus.append(distiller.tau)
    assert taus == pytest.approx([1.0, 1e-2, 1e-4, 1e-4])


def prepared(model_name: str, small_data: str, **overrides):
    """(model after ``on_epoch_start(0)``, one training batch) of ``model_name``."""
    trainer, batch = kd_trainer(model_name, small_data, **overrides)
    return trainer.model, batch


def kd_trainer(model_name: str, small_data: str, **overrides):
    """(trainer whose model has started epoch 0, one training batch) of ``model_name``."""
    trainer, train_data, _ = kd_run(model_name, small_data, **overrides)
    return trainer, next(iter(train_data))


def kd_run(model_name: str, small_data: str, *, started: bool = True, **overrides):
    """(trainer whose model has started epoch 0 unless not ``started``, train loader,
    validation loader)."""
    config = make_config(model_name, small_data, **overrides)
    init_logger(config)
    train_data, valid_data, _, model = build(config)
    trainer = trainer_for(config, model)
    if started:
        model.on_epoch_start(0)
    return trainer, train_data, valid_data


def unprepared(model_name: str, small_data: str):
    """A ``model_name`` model with its teacher, before its first epoch (which may release it)."""
    config = make_config(model_name, small_data)
    init_logger(config)
    return build(config)[3]


def triples(model, batch):
    return batch[model.USER_ID], batch[model.ITEM_ID], batch[model.NEG_ITEM_ID]


def test_de_term_weighs_each_unique_entity_once_and_divides_by_the_batch(small_data, monkeypatch):
    model, batch = prepared("DE", small_data, de_weight=0.3)
    distiller = model.distillers[0]
    distiller.tau = 0.7
    user, pos, neg = triples(model, batch)
    assert len(user.unique()) < len(user)  # repeated users are counted once

    # Experts replaced by a stand-in whose value per entity is known: the test checks how DE
    # combines the experts' losses, not the experts (tests/test_losses.py checks those).
    def stand_in(student, teacher, tau):
        assert tau == 0.7
        return student.sum(-1) * teacher.sum(-1) + 1.0

    monkeypatch.setattr(distiller.user_experts, "forward", stand_in)
    monkeypatch.setattr(distiller.item_experts, "forward", stand_in)
    with torch.no_grad():
        student_users, student_items = model.student_net.representations(
            torch.arange(model.n_users), torch.arange(model.n_items))

        def value(student, teacher, ids):
            return sum(stand_in(student[i:i + 1], teacher[i:i + 1], 0.7).item()
                       for i in set(ids.tolist()))

        expected = (value(student_users, distiller.teacher_users, user)
                    + 0.5 * (value(student_items, distiller.teacher_items, pos)
                             + value(student_items, distiller.teacher_items, neg)))
        got = distiller(user, pos, neg)
    assert got.item() == pytest.approx(0.3 * expected / len(user), rel=1e-5)


def test_de_needs_representations_and_rrd_does_not(small_data):
    from recbole_kd.errors import BackboneError
    from recbole_kd.model.de import DE
    from recbole_kd.model.rrd import RRD

    with pytest.raises(BackboneError, match="teacher model 'CDAE'"):
        DE.check_backbone("teacher", "CDAE")
    RRD.check_backbone("teacher", "CDAE")


def test_expert_temperature_waits_for_the_delay_then_decays_geometrically(small_data):
    from recbole_kd.model.expert_distiller import ExpertDistiller

    model = unprepared("DE", small_data)
    distiller = ExpertDistiller(model, 2, tau_start=0.5, tau_end=0.005, anneal_epochs=2, delay=3)
    assert distiller.tau == 0.5
    taus = []
    for epoch in range(8):
        distiller.on_epoch_start(epoch)
        taus.append(distiller.tau)
    assert taus == pytest.approx([0.5, 0.5, 0.5, 0.5, 0.05, 0.005, 0.005, 0.005])


def test_de_temperature_anneals_over_its_own_epochs_from_any_start(small_data):
    model, _ = prepared("DE", small_data, de_anneal_epochs=4, de_tau_start=2.0,
                        de_tau_end=0.02)
    distiller = model.distillers[0]
    taus = []
    for epoch in (0, 1, 2, 4, 9):
        model.on_epoch_start(epoch)
        taus.append(distiller.tau)
    assert taus == pytest.approx([2.0, 2.0 * 0.01 ** 0.25, 0.2, 0.02, 0.02])


def test_de_teacher_representations_are_the_teacher_s_of_every_entity(small_data):
    model = unprepared("DE", small_data)
    teacher = Backbone(model.teacher)
    model.on_epoch_start(0)
    distiller = model.distillers[0]
    users, items = teacher.representations(torch.arange(model.n_users), torch.arange(model.n_items))
    assert torch.equal(distiller.teacher_users, users)
    assert torch.equal(distiller.teacher_items, items)


def test_rrd_term_is_the_weighted_sum_of_each_unique_user_s_loss_over_the_batch(small_data):
    from recbole_kd.model.loss import relaxed_ranking_loss

    model, batch = prepared("RRD", small_data, rrd_weight=0.3)
    distiller = model.distillers[0]
    user, pos, neg = triples(model, batch)
    with torch.no_grad():
        expected = 0.0
        for u in set(user.tolist()):
            interesting, uninteresting = distiller.sampler.for_users(torch.tensor([u]))
            assert interesting.shape == (1, 5) and uninteresting.shape == (1, 5)
            users = torch.tensor([u])
            expected += relaxed_ranking_loss(model.student_net.score(users, interesting),
                                             model.student_net.score(users, uninteresting)).item()
        got = distiller(user, pos, neg)
    assert got.item() == pytest.approx(0.3 * expected / len(user), rel=1e-5)


def test_rrd_draws_continue_from_a_state_dict(small_data):
    import time

    config = make_config("RRD", small_data)
    init_logger(config)
    _, _, _, fresh = build(config)
    untouched = {k: v.clone() if torch.is_tensor(v) else v for k, v in fresh.state_dict().items()}
    start = time.perf_counter()
    fresh.on_epoch_start(0)
    distiller = fresh.distillers[0]
    assert 0 <= distiller.top_n_seconds <= time.perf_counter() - start
    _, _, _, resumed = build(config)
    resumed.load_state_dict(fresh.state_dict())
    _, _, _, restarted = build(config)
    restarted.load_state_dict(untouched)  # a state taken before any draw holds no sampler state
    for model in (fresh, resumed, restarted):
        model.on_epoch_start(1)
    draws = [m.distillers[0].sampler.for_users(torch.arange(1, m.n_users)) for m in
             (fresh, resumed, restarted)]
    assert all(torch.equal(a, b) for a, b in zip(draws[0], draws[1]))
    assert not all(torch.equal(a, b) for a, b in zip(draws[0], draws[2]))


# ----- KDTrainer's step -----------------------------------------------------------------------


@pytest.mark.parametrize("term", [0, 1])
def test_training_stops_on_a_non_finite_term_naming_it(small_data, monkeypatch, term):
    from recbole_kd.errors import TrainingError

    trainer, batch = kd_trainer("DE", small_data)
    model = trainer.model
    losses = model.calculate_loss

    def with_inf(interaction):
        values = list(losses(interaction))
        values[term] = values[term] + float("inf")
        return tuple(values)

    monkeypatch.setattr(model, "calculate_loss", with_inf)
    with pytest.raises(TrainingError, match=f"'{model.loss_names[term]}' is inf"):
        trainer._train_epoch([batch], epoch_idx=1)


def test_a_single_loss_is_checked_under_its_name():
    from recbole_kd.errors import TrainingError
    from recbole_kd.trainer.kd_trainer import check_finite

    check_finite(torch.tensor(1.0), ["bpr_loss"])
    with pytest.raises(TrainingError, match="'bpr_loss' is nan"):
        check_finite(torch.tensor(float("nan")), ["bpr_loss"])


def test_kd_epoch_starts_the_distillers_epoch_and_returns_each_term(small_data, monkeypatch,
                                                                    capsys):
    trainer, batch = kd_trainer("DE", small_data, de_anneal_epochs=4)
    model = trainer.model
    terms, losses = [], model.calculate_loss
    monkeypatch.setattr(model, "calculate_loss",
                        lambda interaction: terms.append(losses(interaction)) or terms[-1])
    totals = trainer._train_epoch([batch, batch], epoch_idx=2)
    assert model.distillers[0].tau == pytest.approx(1e-5)  # half way from 1 to 1e-10
    assert len(totals) == 2
    for got, first, second in zip(totals, *terms):
        assert got == pytest.approx(first.item() + second.item(), rel=1e-6)
    assert capsys.readouterr().err == ""  # no progress bar unless asked


def plain(text: str) -> str:
    """``text`` without its terminal colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@pytest.mark.parametrize("places", [None, 2])
def test_kd_epoch_line_and_tensorboard_name_each_term(small_data, monkeypatch, places):
    trainer, _ = kd_trainer("DE", small_data, loss_decimal_place=places)
    line = plain(trainer._generate_train_loss_output(3, 10.0, 12.5, (0.5, 0.25)))
    if places is None:
        assert line == "epoch 3 training [time: 2.50s, bpr_loss: 0.5000, de_loss: 0.2500]"
    else:
        assert line == "epoch 3 training [time: 2.50s, bpr_loss: 0.50, de_loss: 0.25]"
    # A single loss (a baseline's) keeps RecBole's line.
    assert plain(trainer._generate_train_loss_output(3, 10.0, 12.5, 0.5)).endswith(
        "train loss: " + ("0.5000]" if places is None else "0.50]"))
    recorded = []
    monkeypatch.setattr(trainer.tensorboard, "add_scalar",
                        lambda tag, value, step: recorded.append((tag, value, step)))
    trainer._add_train_loss_to_tensorboard(3, (0.5, 0.25))
    trainer._add_train_loss_to_tensorboard(4, 0.75)
    assert recorded == [("Loss/Train/bpr_loss", 0.5, 3), ("Loss/Train/de_loss", 0.25, 3),
                        ("Loss/Train", 0.75, 4)]


def test_evaluate_role_scores_that_model_and_hands_evaluation_back_to_the_student(small_data):
    trainer, _, valid_data = kd_run("DE", small_data, started=False)  # the teacher is there
    model = trainer.model
    seen = []
    full_sort_predict = model.full_sort_predict
    model.full_sort_predict = lambda interaction: seen.append(model.eval_role) or \
        full_sort_predict(interaction)
    teacher = trainer.evaluate_role(valid_data, "teacher")
    assert set(seen) == {"teacher"} and model.eval_role == "student"
    assert trainer.evaluate_role(valid_data, "student") != teacher
    assert set(seen) == {"teacher", "student"}


def test_evaluate_alone_puts_each_model_s_own_weights_back(small_data, capsys):
    trainer, _, valid_data = kd_run("DE", small_data)
    model = trainer.model
    before = {k: v.clone() for k, v in model.student.state_dict().items()}
    other = {k: torch.zeros_like(v) for k, v in before.items()}
    results = trainer.evaluate_alone(valid_data, {"student": other})
    for key, value in model.student.state_dict().items():
        assert torch.equal(value, before[key])
    assert results["student"] != trainer.evaluate_role(valid_data, "student")
    assert trainer.evaluate_roles(valid_data, load_best_model=False) == {
        "student": trainer.evaluate_role(valid_data, "student")}
    assert trainer.best_valid_results() == {"student": trainer.best_valid_result}
    # Without show_progress nothing is drawn on the terminal; with it, a progress bar is.
    assert capsys.readouterr().err == ""
    trainer.evaluate_role(valid_data, "student", show_progress=True)
    assert capsys.readouterr().err != ""
