"""A finished run is final: resuming it trains nothing and rewrites nothing, and a run killed
during its final test or export ends exactly as the uninterrupted one."""

from __future__ import annotations

import glob
import logging
import os
import signal
import subprocess
import sys

import pytest
import torch
from recbole.utils import init_logger

from recbole_kd.key_checks import settings_for
from recbole_kd.quick_start import run_recbole_kd
from recbole_kd.trainer.resumable import ResumableTrainer
from tests.conftest import REPOSITORY, assert_same, build, digests, fast, make_config, trainer_for

SETTINGS = {"epochs": 3, "stopping_step": 100, "bd_update_epochs": 2,
            "teacher_config": {"embedding_size": 32, "epochs": 1},
            "student_config": {"embedding_size": 8, "epochs": 1}}


def config_of(model: str, small_data: str, **overrides) -> dict:
    return {**fast(model), **settings_for(model, SETTINGS), "data_path": small_data, **overrides}


def last_point(model: str) -> str:
    (path,) = glob.glob(f"saved/{model}-*-last.pth")
    return path


def saved_state(path: str) -> dict:
    state = torch.load(path, weights_only=False)
    state.pop("config", None)
    return state


@pytest.mark.parametrize("model", ["DERRD", "BD"])
def test_resuming_a_finished_run_changes_no_file_and_trains_nothing(small_data, workdir,
                                                                     monkeypatch, caplog, model):
    config = config_of(model, small_data)
    first = run_recbole_kd(model, config_dict=config)
    point = last_point(model)
    assert torch.load(point, weights_only=False)["finished"] is True
    before = digests(str(workdir / "saved"))
    trained = []
    train_epoch = ResumableTrainer._train_epoch
    monkeypatch.setattr(ResumableTrainer, "_train_epoch", lambda self, *a, **k:
                        trained.append(1) or train_epoch(self, *a, **k))
    with caplog.at_level(logging.INFO):
        again = run_recbole_kd(model, config_dict={**config, "kd_resume": point,
                                                   "state": "INFO"})
    assert trained == []
    assert "had finished training" in caplog.text and "exported earlier" in caplog.text
    assert digests(str(workdir / "saved")) == before
    assert again["test_result"] == first["test_result"]
    assert again["best_valid_result"] == first["best_valid_result"]
    assert again["student_file"] == first["student_file"]


def test_a_run_stopped_early_is_final(small_data, monkeypatch):
    """The resume point of the epoch that stops training says the run is over; the epochs
    before it do not."""
    config = make_config("RRD", small_data, **{**settings_for("RRD", SETTINGS), "epochs": 6})
    init_logger(config)
    train_data, valid_data, _, model = build(config)
    trainer = trainer_for(config, model)
    finished = {}
    save = trainer._save_resume_point

    def record(epoch):
        save(epoch)
        finished[epoch] = torch.load(trainer.resume_file, weights_only=False)["finished"]

    monkeypatch.setattr(trainer, "_save_resume_point", record)
    monkeypatch.setattr(trainer, "_validate", lambda data, epoch, verbose, progress:
                        (epoch == 0, epoch == 2, 0.5))
    trainer.fit(train_data, valid_data)
    assert finished == {0: False, 1: False, 2: True}

    resumed = trainer_for(config, build(config)[3])
    resumed.resume_checkpoint(trainer.resume_file)
    best = digests("saved")
    assert resumed.finished and resumed.fit(train_data, valid_data) == (
        trainer.best_valid_score, trainer.best_valid_result)
    assert digests("saved") == best


@pytest.mark.parametrize("eval_step,validated", [(0, []), (2, [1]), (1, [0, 1, 2])])
def test_every_epoch_writes_a_resume_point_whatever_eval_step(small_data, monkeypatch, eval_step,
                                                              validated):
    config = make_config("RRD", small_data, **settings_for("RRD", SETTINGS), eval_step=eval_step)
    init_logger(config)
    train_data, valid_data, _, model = build(config)
    trainer = trainer_for(config, model)
    points, best, checked = [], [], []
    monkeypatch.setattr(trainer, "_train_epoch", lambda *a, **k: 1.0)
    monkeypatch.setattr(trainer, "_save_resume_point", points.append)
    monkeypatch.setattr(trainer, "_save_checkpoint", lambda epoch, verbose=True: best.append(epoch))
    monkeypatch.setattr(trainer, "_validate", lambda data, epoch, verbose, progress:
                        checked.append(epoch) or (True, False, 0.5))
    trainer.fit(train_data, valid_data)
    assert points == [0, 1, 2] and checked == validated
    # Without validation every epoch's weights are the model, as in RecBole.
    assert best == (validated or [0, 1, 2])


class Interrupted(Exception):
    """Raised where a user would press Ctrl-C."""


def test_a_run_without_validation_resumes_bit_for_bit(small_data, monkeypatch):
    config = config_of("RRD", small_data, eval_step=0)
    straight = run_recbole_kd("RRD", config_dict=config)
    straight_point = last_point("RRD")
    save = ResumableTrainer._save_resume_point

    def save_then_stop(self, epoch, *args, **kwargs):
        save(self, epoch, *args, **kwargs)
        if epoch == 0:
            raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(ResumableTrainer, "_save_resume_point", save_then_stop)
        with pytest.raises(Interrupted):
            run_recbole_kd("RRD", config_dict=config)
    (point,) = set(glob.glob("saved/RRD-*-last.pth")) - {straight_point}
    resumed = run_recbole_kd("RRD", config_dict={**config, "kd_resume": point})
    assert resumed["test_result"] == straight["test_result"]
    assert_same(saved_state(resumed["student_file"]), saved_state(straight["student_file"]))


# Runs the checkout's recbole_kd and kills itself, as SIGKILL would, in the middle of writing
# the student's export: after training, after the test, after BD's teacher export.
KILLED_IN_EXPORT = """
import os, signal, sys
import torch
from recbole_kd import checkpoint
from recbole_kd.quick_start import run_recbole_kd
save = torch.save
def save_then_die(state, path, **kwargs):
    if str(path).endswith("-student.pth.tmp"):
        with open(path, "wb") as f:
            f.write(b"half a file")
        os.kill(os.getpid(), signal.SIGKILL)
    save(state, path, **kwargs)
checkpoint.torch.save = save_then_die
sys.argv = sys.argv[:1]
run_recbole_kd({model!r}, config_dict={config!r})
"""


@pytest.mark.parametrize("model", ["DERRD", "BD"])
def test_a_run_killed_during_its_export_resumes_to_the_same_exports(small_data, workdir, model):
    config = config_of(model, small_data)
    straight = run_recbole_kd(model, config_dict=config)
    straight_point = last_point(model)
    env = {**os.environ, "PYTHONPATH": REPOSITORY}
    process = subprocess.run(
        [sys.executable, "-c", KILLED_IN_EXPORT.format(model=model, config=config)],
        cwd=workdir, env=env, capture_output=True, text=True, check=False)
    assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]
    (killed_point,) = set(glob.glob(f"saved/{model}-*-last.pth")) - {straight_point}
    root = killed_point[: -len("-last.pth")]
    assert not os.path.exists(f"{root}-student.pth")
    assert os.path.exists(f"{root}-teacher.pth") is (model == "BD")
    resumed = run_recbole_kd(model, config_dict={**config, "kd_resume": killed_point})
    assert resumed["test_result"] == straight["test_result"]
    for role in ("teacher", "student"):
        if f"{role}_file" in straight:
            assert resumed[f"{role}_file"] == f"{root}-{role}.pth"
            assert_same(saved_state(resumed[f"{role}_file"]), saved_state(straight[f"{role}_file"]))
    assert_same(saved_state(resumed["saved_model_file"]),
                saved_state(straight["saved_model_file"]))


def test_ctrl_c_prints_one_line_naming_the_resume_point_and_the_command(small_data, monkeypatch,
                                                                        capsys):
    import run_recbole_kd
    from tests.test_error_catalogue import small_args

    train_epoch = ResumableTrainer._train_epoch

    def interrupted_at_epoch_1(self, data, epoch, *args, **kwargs):
        if epoch == 1 and type(self.model).__name__ == "DERRD":
            raise KeyboardInterrupt
        return train_epoch(self, data, epoch, *args, **kwargs)

    monkeypatch.setattr(ResumableTrainer, "_train_epoch", interrupted_at_epoch_1)
    with pytest.raises(SystemExit) as stopped:
        run_recbole_kd.main([*small_args(small_data), "--epochs=3"])
    assert stopped.value.code == 130
    error = capsys.readouterr().err
    assert "Traceback" not in error
    (line,) = [line for line in error.splitlines() if "interrupted" in line]
    point = last_point("DERRD")
    assert f"--kd_resume={point} continues it" in line
    assert torch.load(point, weights_only=False)["epoch"] == 0
