"""Interrupted runs resume exactly; checkpoints are written atomically; seeds reproduce runs."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time

import pytest
import torch

from recbole_kd.quick_start import run_recbole_kd
from tests.conftest import FAST

SETTINGS = {"epochs": 4, "stopping_step": 100, "teacher_config": {"embedding_size": 32,
                                                                  "epochs": 1}}


@pytest.mark.parametrize("model", ["DE", "RRD", "DERRD"])
def test_resumed_run_ends_like_an_uninterrupted_one(small_data, workdir, model):
    config = {**FAST, **SETTINGS, "data_path": small_data}
    straight = run_recbole_kd(model, config_dict=config)
    # The same run stopped after two epochs, then resumed from its last checkpoint.
    first = run_recbole_kd(model, config_dict={**config, "epochs": 2})
    resume_file = first["saved_model_file"].replace(".pth", "-last.pth")
    resumed = run_recbole_kd(model, config_dict={**config, "kd_resume": resume_file})
    assert resumed["test_result"] == straight["test_result"]
    assert resumed["best_valid_result"] == straight["best_valid_result"]


@pytest.mark.parametrize("model", ["DE", "RRD", "DERRD", "BD"])
def test_same_seed_same_metrics(small_data, model):
    config = {**FAST, "epochs": 2, "data_path": small_data}
    first = run_recbole_kd(model, config_dict=config, saved=False)
    second = run_recbole_kd(model, config_dict=config, saved=False)
    assert first["test_result"] == second["test_result"]
    other = run_recbole_kd(model, config_dict={**config, "seed": 7}, saved=False)
    assert other["test_result"] != first["test_result"]


KILLED_RUN = """
import sys
from recbole_kd.quick_start import run_recbole_kd
sys.argv = sys.argv[:1]
run_recbole_kd("DERRD", config_dict={config!r})
"""


def test_run_killed_mid_epoch_resumes_to_the_same_result(small_data, workdir):
    """SIGKILL a run in a subprocess once it has a resume point, then resume it."""
    config = {**FAST, **SETTINGS, "epochs": 6, "data_path": small_data}
    straight = run_recbole_kd("DERRD", config_dict=config)
    for path in glob.glob("saved/DERRD-*"):
        os.remove(path)
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN.format(config=config)],
                               cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not glob.glob("saved/DERRD-*-last.pth") and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into a later epoch
    process.kill()
    process.wait()
    (resume_file,) = glob.glob("saved/DERRD-*-last.pth")
    checkpoint = torch.load(resume_file, weights_only=False)
    assert checkpoint["epoch"] < 5, "the run finished before it was killed"
    resumed = run_recbole_kd("DERRD", config_dict={**config, "kd_resume": resume_file})
    assert resumed["test_result"] == straight["test_result"]


def test_kill_during_a_save_keeps_the_previous_checkpoint(workdir, monkeypatch):
    from recbole_kd.model import base

    path = str(workdir / "run.pth")
    base.atomic_save({"epoch": 1}, path)

    def dying_save(state, target, **kwargs):
        with open(target, "wb") as f:
            f.write(b"\x80\x04 truncated")
        raise KeyboardInterrupt  # the process dies mid-write

    monkeypatch.setattr(base.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        base.atomic_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"epoch": 1}
