"""A stock RecBole teacher is used as is; trained teachers are cached and reused.

Refused checkpoints are in test_bad_input.py."""

from __future__ import annotations

import glob
import os
import subprocess
import time

import pytest
import torch
from recbole.quick_start import run_recbole
from recbole.utils import init_logger

from recbole_kd.file_lock import locked
from recbole_kd.quick_start import prepare_run, run_recbole_kd
from recbole_kd.trainer.resumable import ResumableTrainer
from tests.conftest import FAST, fast, make_config, working_in
from tests.test_cli import command, run_command
from tests.test_error_catalogue import small_args

BPR_TEACHER = {"embedding_size": 32}


@pytest.fixture
def stock_teacher(small_data) -> str:
    """A BPR checkpoint written by stock RecBole on the small data, seed 2020."""
    config = {k: v for k, v in FAST.items() if not k.startswith(("rrd_", "de_", "teacher", "student"))}
    run_recbole("BPR", config_dict={**config, "data_path": small_data, **BPR_TEACHER}, saved=True)
    (path,) = glob.glob("saved/BPR-*.pth")
    return path


def test_stock_recbole_teacher_is_used_as_is(small_data, stock_teacher):
    config = make_config("RRD", small_data, teacher_checkpoint=stock_teacher, teacher_model=None)
    init_logger(config)
    run = prepare_run(config)
    saved = torch.load(stock_teacher, weights_only=False)["state_dict"]
    for key, value in run.model.teacher.state_dict().items():
        assert torch.equal(value, saved[key])
    # The run's config names the checkpoint's model; the config given is left as it was.
    assert run.config["teacher_model"] == "BPR"
    assert run.config["teacher_config"]["embedding_size"] == 32
    assert config["teacher_model"] is None


def test_trained_teacher_is_cached_and_reused(small_data):
    first = run_recbole_kd("RRD", config_dict={**fast("RRD"), "data_path": small_data}, saved=False)
    cached = glob.glob("saved/teacher-BPR-ml-small-*.pth")
    assert len(cached) == 1 and not glob.glob("saved/*.partial")
    stamp = os.path.getmtime(cached[0])
    second = run_recbole_kd("RRD", config_dict={**fast("RRD"), "data_path": small_data}, saved=False)
    assert glob.glob("saved/teacher-*.pth") == cached and os.path.getmtime(cached[0]) == stamp
    assert first["test_result"] == second["test_result"]
    # Another teacher setting is another teacher.
    run_recbole_kd("RRD", config_dict={**fast("RRD"), "data_path": small_data,
                                       "teacher_config": {"embedding_size": 16}}, saved=False)
    assert len(glob.glob("saved/teacher-BPR-ml-small-*.pth")) == 2


def test_a_teacher_training_cut_short_continues_where_it_stopped(small_data, workdir,
                                                                   monkeypatch):
    settings = {**fast("RRD"), "data_path": small_data, "epochs": 3}

    def teacher_weights() -> dict:
        (path,) = glob.glob("saved/teacher-BPR-ml-small-*.pth")
        return torch.load(path, weights_only=False)["state_dict"]

    save = ResumableTrainer._save_resume_point

    def save_then_stop(self, epoch, *args, **kwargs):
        save(self, epoch, *args, **kwargs)
        if epoch == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # (undo() would also undo the work folder's chdir)
        patch.setattr(ResumableTrainer, "_save_resume_point", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            prepare_run(make_config("RRD", small_data, epochs=3))
    assert glob.glob("saved/teacher-BPR-*.pth-last.partial") and not glob.glob("saved/*.pth")
    trained = []
    train_epoch = ResumableTrainer._train_epoch
    with monkeypatch.context() as patch:
        patch.setattr(ResumableTrainer, "_train_epoch", lambda self, data, epoch, *a, **k:
                      trained.append(epoch) or train_epoch(self, data, epoch, *a, **k))
        prepare_run(make_config("RRD", small_data, epochs=3))
    assert trained == [2]  # the teacher's last epoch only
    assert not glob.glob("saved/*-last*")  # published: its resume point is gone
    resumed = teacher_weights()
    os.makedirs("whole")
    with working_in("whole"):
        run_recbole_kd("RRD", config_dict=settings, saved=False)
        whole = teacher_weights()
    assert resumed.keys() == whole.keys()
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)


def test_two_runs_needing_the_same_teacher_take_turns(small_data, workdir):
    """Two runs held at the teacher's lock until both wait there: when it is released, one
    trains the teacher and the other waits for it, then reuses it."""
    args = [a for a in small_args(small_data, "RRD") if not a.startswith("--state")]
    args.append("--state=INFO")
    os.makedirs("probe")  # a run elsewhere gives the cached teacher's name
    assert run_command(args, "probe").returncode == 0
    (name,) = (os.path.basename(p) for p in glob.glob("probe/saved/teacher-*.pth"))
    outputs = [workdir / "run0.out", workdir / "run1.out"]
    with open(outputs[0], "w") as out0, open(outputs[1], "w") as out1, \
            locked(os.path.join("saved", name), "the test holds the lock"):
        runs = [subprocess.Popen(**command(args), cwd=workdir, stdout=out,
                                 stderr=subprocess.STDOUT) for out in (out0, out1)]
        deadline = time.monotonic() + 300
        while not all("waiting for it to finish" in out.read_text() for out in outputs):
            assert time.monotonic() < deadline and all(r.poll() is None for r in runs), \
                [out.read_text()[-2000:] for out in outputs]
            time.sleep(0.5)
    assert [run.wait(timeout=300) for run in runs] == [0, 0], \
        [out.read_text()[-2000:] for out in outputs]
    logs = [out.read_text() for out in outputs]
    assert sorted(log.count("Training the teacher") for log in logs) == [0, 1]
    assert sorted(log.count("Reusing the teacher") for log in logs) == [0, 1]
    assert glob.glob("saved/teacher-*.pth") == [os.path.join("saved", name)]
    tests = [log.split("test result: ")[1].splitlines()[0] for log in logs]
    assert tests[0] == tests[1]
