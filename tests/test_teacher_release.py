"""A frozen teacher read only while the distillers prepare (DE, RRD, DERRD, RD, DCD, HTD) is
dropped once they are: its weights live in its own checkpoint, not in the run's."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from recbole.utils import init_logger

from recbole_kd.quick_start import prepare_run
from tests.conftest import make_config, trainer_for


def prepared_run(method: str, small_data: str):
    config = make_config(method, small_data)
    init_logger(config)
    run = prepare_run(config)
    run.take_pretrained_states()  # the copy read from the teacher's checkpoint
    return run


def of_teacher(state: dict) -> list[str]:
    return [key for key in state if key.startswith("teacher.")]


@pytest.mark.parametrize("method", ["DE", "RRD", "DERRD", "RD", "DCD", "HTD"])
def test_the_teacher_is_freed_once_the_distillers_are_prepared(small_data, method):
    run = prepared_run(method, small_data)
    model = run.model
    assert model.releases_teacher and of_teacher(model.state_dict())
    teacher_weight = weakref.ref(next(model.teacher.parameters()))
    model.on_epoch_start(0)
    gc.collect()
    assert model.teacher is None and teacher_weight() is None
    assert not of_teacher(model.state_dict())
    model.on_epoch_start(1)  # later epochs train without it
    losses = model.calculate_loss(next(iter(run.train_data)))
    assert all(torch.isfinite(loss) for loss in losses)
    with pytest.raises(RuntimeError, match="released its teacher .* build a new model"):
        model.load_pretrained("teacher", {})
    trainer = trainer_for(run.config, model)
    with pytest.raises(RuntimeError, match="released its teacher"):
        trainer.evaluate_role(run.valid_data, "teacher")
    assert trainer.evaluate_role(run.valid_data, "student")  # the student is evaluated as ever


@pytest.mark.parametrize("method", ["CD", "BD"])
def test_a_teacher_read_in_training_is_kept(small_data, method):
    model = prepared_run(method, small_data).model
    assert not model.releases_teacher
    model.on_epoch_start(0)
    assert model.teacher is not None and of_teacher(model.state_dict())


def test_checkpoints_with_or_without_the_teacher_load(small_data):
    run = prepared_run("DERRD", small_data)
    model = run.model
    full = {k: v.clone() if torch.is_tensor(v) else v  # as older versions saved
            for k, v in model.state_dict().items()}
    teacher = {k[len("teacher."):]: v for k, v in full.items() if k.startswith("teacher.")}
    model.on_epoch_start(0)
    without = model.state_dict()
    model.load_state_dict(full)  # teacher weights for a released teacher: ignored
    model.load_state_dict(without)
    fresh = prepared_run("DERRD", small_data).model
    fresh.load_state_dict(without)  # no teacher weights: the model's own teacher stays
    for key, value in fresh.teacher.state_dict().items():
        assert torch.equal(value, teacher[key])
