"""Interrupted runs resume exactly: weights, optimizers, samplers and random states bit for bit."""

from __future__ import annotations

import glob
import logging
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from recbole.utils import init_logger

from recbole_kd import distributed
from recbole_kd.errors import CheckpointError
from recbole_kd.key_checks import settings_for
from recbole_kd.quick_start import run_recbole_kd
from recbole_kd.trainer import KDTrainer
from recbole_kd.trainer.resumable import rank_state
from tests.conftest import REPOSITORY, assert_same, build, fast, make_config, trainer_for

# Warm-ups of one epoch, so that every run of a test shares the cached models trained alone.
SETTINGS = {"epochs": 4, "stopping_step": 100, "bd_update_epochs": 3,
            "teacher_config": {"embedding_size": 32, "epochs": 1},
            "student_config": {"embedding_size": 8, "epochs": 1}}
METHODS = ["DE", "RRD", "DERRD", "BD"]


class Interrupted(Exception):
    """Raised by the test's hook where a user would press Ctrl-C."""


def stop_after_epoch(monkeypatch, last: int) -> None:
    """Make the next run stop right after it has written the resume point of epoch ``last``."""
    save = KDTrainer._save_resume_point

    def save_then_stop(self, epoch_idx):
        save(self, epoch_idx)
        if epoch_idx == last:
            raise Interrupted

    monkeypatch.setattr(KDTrainer, "_save_resume_point", save_then_stop)


def resume_points(model: str) -> set[str]:
    return set(glob.glob(f"saved/{model}-*-last.pth"))


def checkpoint_state(path: str) -> dict:
    """What must be equal between two checkpoints of one run: all but the file names and the
    command that wrote them."""
    state = torch.load(path, weights_only=False)
    for key in ("config", "saved_model_file"):
        state.pop(key, None)
    return state


@pytest.mark.parametrize("model,pair", [
    *((method, {}) for method in METHODS),
    ("BD", {"teacher_model": "CDAE", "student_model": "CDAE"}),  # batches of users
], ids=[*METHODS, "BD-CDAE"])
def test_resumed_run_ends_bit_for_bit_like_an_uninterrupted_one(
        small_data, monkeypatch, model, pair):
    config = {**fast(model), **settings_for(model, SETTINGS), "data_path": small_data, **pair}
    straight = run_recbole_kd(model, config_dict=config)
    (straight_last,) = resume_points(model)

    with monkeypatch.context() as patch:
        stop_after_epoch(patch, 1)
        with pytest.raises(Interrupted):
            run_recbole_kd(model, config_dict=config)
    (interrupted_last,) = resume_points(model) - {straight_last}
    assert torch.load(interrupted_last, weights_only=False)["epoch"] == 1

    resumed = run_recbole_kd(model, config_dict={**config, "kd_resume": interrupted_last})
    assert resumed["test_result"] == straight["test_result"]
    assert resumed["best_valid_result"] == straight["best_valid_result"]
    assert_same(checkpoint_state(interrupted_last), checkpoint_state(straight_last))
    assert_same(checkpoint_state(resumed["saved_model_file"]),
                checkpoint_state(straight["saved_model_file"]))
    for role in ("teacher", "student"):
        if f"{role}_file" in straight:
            assert_same(checkpoint_state(resumed[f"{role}_file"]),
                        checkpoint_state(straight[f"{role}_file"]))


@pytest.mark.parametrize("model", METHODS)
def test_same_seed_same_weights_other_seed_other_weights(small_data, model):
    config = {**fast(model), **settings_for(model, SETTINGS), "epochs": 2,
              "data_path": small_data}
    first = run_recbole_kd(model, config_dict=config)
    second = run_recbole_kd(model, config_dict=config)
    assert first["test_result"] == second["test_result"]
    assert_same(checkpoint_state(first["student_file"]), checkpoint_state(second["student_file"]))
    (first_last, second_last) = sorted(resume_points(model), key=os.path.getmtime)
    assert_same(checkpoint_state(first_last), checkpoint_state(second_last))
    other = run_recbole_kd(model, config_dict={**config, "seed": 7})
    assert other["test_result"] != first["test_result"]


# Runs the checkout's recbole_kd (PYTHONPATH) and kills itself, as SIGKILL would, right after
# the resume point of epoch 2 is on disk: a deterministic point in the middle of the run.
KILLED_RUN = """
import os, signal, sys
import recbole_kd
print(recbole_kd.__file__, flush=True)
from recbole_kd.quick_start import run_recbole_kd
from recbole_kd.trainer import KDTrainer
from recbole_kd.trainer.resumable import rank_state
save = KDTrainer._save_resume_point
def save_then_die(self, epoch_idx):
    save(self, epoch_idx)
    if epoch_idx == 2:
        os.kill(os.getpid(), signal.SIGKILL)
KDTrainer._save_resume_point = save_then_die
sys.argv = sys.argv[:1]
run_recbole_kd("DERRD", config_dict={config!r})
"""


def test_run_killed_mid_run_resumes_to_the_same_result(small_data, workdir):
    config = {**fast("DERRD"), **settings_for("DERRD", SETTINGS), "epochs": 5,
              "data_path": small_data}
    straight = run_recbole_kd("DERRD", config_dict=config)
    (straight_last,) = resume_points("DERRD")
    env = {**os.environ, "PYTHONPATH": REPOSITORY}
    process = subprocess.run([sys.executable, "-c", KILLED_RUN.format(config=config)],
                             cwd=workdir, env=env, capture_output=True, text=True, check=False)
    assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]
    imported = process.stdout.splitlines()[0]
    assert imported.startswith(os.path.join(REPOSITORY, "recbole_kd")), imported
    (killed_last,) = resume_points("DERRD") - {straight_last}
    assert torch.load(killed_last, weights_only=False)["epoch"] == 2
    resumed = run_recbole_kd("DERRD", config_dict={**config, "kd_resume": killed_last})
    assert resumed["test_result"] == straight["test_result"]
    assert_same(checkpoint_state(killed_last), checkpoint_state(straight_last))


def test_kill_during_a_save_keeps_the_previous_checkpoint(workdir, monkeypatch):
    from recbole_kd import checkpoint

    path = str(workdir / "run.pth")
    checkpoint.atomic_save({"epoch": 1}, path)

    def dying_save(state, target, **kwargs):
        with open(target, "wb") as f:
            f.write(b"\x80\x04 truncated")
        raise KeyboardInterrupt  # the process dies mid-write

    with monkeypatch.context() as patch:  # (undo() would also undo the work folder's chdir)
        patch.setattr(checkpoint.torch, "save", dying_save)
        with pytest.raises(KeyboardInterrupt):
            checkpoint.atomic_save({"epoch": 2}, path)
    assert torch.load(path, weights_only=False) == {"epoch": 1}


def de_trainer(small_data):
    config = make_config("DE", small_data)
    init_logger(config)
    train_data, valid_data, _, model = build(config)
    trainer = trainer_for(config, model)
    trainer.valid_data = valid_data
    return trainer, train_data


def draws(train_data) -> list:
    """A draw from each random stream a run uses."""
    return [torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random(),
            torch.randint(0, 10**6, (3,), generator=train_data.generator).tolist()]


def test_rng_state_brings_back_every_random_stream(small_data):
    trainer, train_data = de_trainer(small_data)
    assert "loader" not in trainer.rng_state()  # no loader known yet
    trainer._restore_rng(train_data)  # nothing pending: the streams go on as they are
    state = trainer.rng_state()
    assert set(state) >= {"torch", "numpy", "python", "loader"}
    assert ("cuda" in state) is torch.cuda.is_available()
    first = draws(train_data)
    trainer._restore_rng(train_data)
    assert draws(train_data) != first
    trainer._pending_rng = state
    trainer._restore_rng(train_data)
    assert trainer._pending_rng is None
    assert draws(train_data) == first


def test_resume_point_holds_what_resume_from_restores(small_data):
    trainer, train_data = de_trainer(small_data)
    trainer.model.on_epoch_start(0)
    trainer._train_epoch([next(iter(train_data))], 0)  # the optimizer has a state
    trainer.cur_step, trainer.best_valid_score, trainer.best_valid_result = 3, 0.25, {"m": 1}
    trainer._restore_rng(train_data)
    trainer._save_resume_point(4)
    root, ext = os.path.splitext(trainer.saved_model_file)
    assert trainer.resume_file == f"{root}-last{ext}" and os.path.isfile(trainer.resume_file)

    resumed, _ = de_trainer(small_data)
    resumed.saved_model_file = "elsewhere.pth"
    resumed.resume_checkpoint(trainer.resume_file)
    assert (resumed.start_epoch, resumed.cur_step, resumed.best_valid_score) == (5, 3, 0.25)
    assert resumed.best_valid_result == {"m": 1}
    assert resumed.saved_model_file == trainer.saved_model_file
    # DE's teacher was released once prepared: it is in neither the model nor the resume point;
    # the resumed model has its own (from the run's teacher checkpoint), until it is prepared.
    assert trainer.model.teacher is None
    saved = torch.load(trainer.resume_file, weights_only=False)["state_dict"]
    assert not any(key.startswith("teacher.") for key in saved)
    without_teacher = {k: v for k, v in resumed.model.state_dict().items()
                       if not k.startswith("teacher.")}
    assert_same(without_teacher, trainer.model.state_dict())
    assert_same(resumed.optimizer.state_dict(), trainer.optimizer.state_dict())
    assert_same(resumed._pending_rng, torch.load(trainer.resume_file,
                                                 weights_only=False)["rng"])


def test_best_model_checkpoint_holds_the_current_weights(small_data, caplog):
    trainer, _ = de_trainer(small_data)
    trainer.cur_step, trainer.best_valid_score = 2, 0.5
    with caplog.at_level(logging.INFO):
        trainer._save_checkpoint(7)
    assert f"Saving current: {trainer.saved_model_file}" in caplog.text
    saved = torch.load(trainer.saved_model_file, weights_only=False)
    assert (saved["epoch"], saved["cur_step"], saved["best_valid_score"]) == (7, 2, 0.5)
    assert_same(saved["state_dict"], trainer.model.state_dict())
    assert_same(saved["optimizer"], trainer.optimizer.state_dict())
    caplog.clear()
    with caplog.at_level(logging.INFO):
        trainer._save_checkpoint(8, verbose=False, saved_model_file="other.pth")
    assert "Saving" not in caplog.text
    assert torch.load("other.pth", weights_only=False)["epoch"] == 8
    assert torch.load(trainer.saved_model_file, weights_only=False)["epoch"] == 7
    # Evaluation takes the best model back from that checkpoint unless told not to.
    expected = trainer.evaluate(trainer.valid_data, load_best_model=False)
    with torch.no_grad():
        for parameter in trainer.model.student.parameters():
            parameter.zero_()
    assert trainer.evaluate_roles(trainer.valid_data) == {"student": expected}


@pytest.mark.parametrize("saved", [True, False])
def test_each_validation_writes_a_resume_point_then_calls_back(small_data, saved, caplog):
    trainer, train_data = de_trainer(small_data)
    called = []
    with caplog.at_level(logging.INFO):
        trainer.fit(train_data, trainer.valid_data, saved=saved,
                    callback_fn=lambda epoch, score: called.append((epoch, score)))
    assert "epoch 0 training" in caplog.text  # verbose unless told otherwise
    assert called == [(0, trainer.best_valid_score)]
    assert os.path.isfile(trainer.resume_file) is saved
    if saved:
        assert torch.load(trainer.resume_file, weights_only=False)["epoch"] == 0


def test_resume_point_rng_state_by_rank_refuses_another_number_of_processes(monkeypatch):
    two_ranks = {"by_rank": {"rng": [{"torch": 1}, {"torch": 2}]}, "epoch": 3}
    with pytest.raises(CheckpointError, match="run of 2 process.*this run has 1"):
        rank_state(two_ranks, "RRD-last.pth")
    assert rank_state({"rng": {"torch": 3}}, "RRD-last.pth") == ({"torch": 3}, {})
    monkeypatch.setattr(distributed, "world_size", lambda: 2)  # a one-process point, two ranks
    with pytest.raises(CheckpointError, match="run of 1 process.*this run has 2"):
        rank_state({"rng": {"torch": 3}}, "RRD-last.pth")
    # The right number of processes, but a rank's sampler file is gone: named, with the fix.
    with pytest.raises(CheckpointError, match=r"rank 0, 'RRD-last.rank0.epoch3.pth', which is"):
        rank_state(two_ranks, "RRD-last.pth")


def test_a_resume_point_continues_only_with_the_teacher_it_distilled(small_data):
    trainer, train_data = de_trainer(small_data)
    trainer.model.on_epoch_start(0)  # DE releases its teacher: the resume point has none
    trainer._restore_rng(train_data)
    trainer._save_resume_point(0)
    other, _ = de_trainer(small_data)
    another = {k: v + 0.01 for k, v in other.model.teacher.state_dict().items()}
    other.model.load_pretrained("teacher", another)
    with pytest.raises(CheckpointError, match="another teacher.*set teacher_checkpoint"):
        other.resume_checkpoint(trainer.resume_file)
    same, _ = de_trainer(small_data)  # the run's own (cached) teacher
    same.resume_checkpoint(trainer.resume_file)
    assert same.start_epoch == 1
