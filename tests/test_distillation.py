"""DE, RRD and DERRD train with BPR, LightGCN and NeuMF as teacher and student."""

from __future__ import annotations

import math

import pytest
import torch
from recbole.utils import init_logger

from tests.conftest import build, make_config, pair_overrides, trainer_for

BACKBONES = ("BPR", "LightGCN", "NeuMF")
ALL_PAIRS = [(t, s) for t in BACKBONES for s in BACKBONES]
SOME_PAIRS = [("BPR", "BPR"), ("LightGCN", "BPR"), ("NeuMF", "NeuMF")]


def train_one_epoch(model_name: str, small_data: str, **overrides):
    config = make_config(model_name, small_data, **overrides)
    init_logger(config)
    train_data, valid_data, _, model = build(config)
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in model.student.state_dict().items()}
    trainer = trainer_for(config, model)
    model.on_epoch_start(0)
    batch = next(iter(train_data)).to(config["device"])
    first_losses = model.calculate_loss(batch)
    trainer.fit(train_data, valid_data, saved=False)
    return model, first_losses, teacher_before, student_before


def check_trained(model, losses, teacher_before, student_before):
    assert len(losses) == 1 + len(model.distillers)
    for loss in losses:
        assert math.isfinite(loss.item())
    for loss in losses[1:]:
        assert loss.item() > 0, "a distillation term is zero: it teaches nothing"
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), f"teacher weight {key} changed"
    changed = [not torch.equal(v, student_before[k]) for k, v in model.student.state_dict().items()]
    assert any(changed), "the student did not learn"
    assert not any(p.requires_grad for p in model.teacher.parameters())


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
