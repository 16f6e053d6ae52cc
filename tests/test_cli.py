"""The command line end to end (a run and a comparison on a tiny slice), and what it does with
its arguments; unique run files."""

from __future__ import annotations

import csv
import glob
import os
import subprocess
import sys
import threading

import pytest
import yaml

from recbole_kd.errors import KDConfigWarning
from recbole_kd.quick_start import run_recbole_kd
from recbole_kd.trainer import factory
from tests.conftest import REPOSITORY, fast, make_config, pair_overrides
from tests.test_error_catalogue import small_args


def command(args: list[str]) -> dict:
    """``python run_recbole_kd.py ARGS`` of the checkout, as subprocess arguments."""
    env = {**os.environ, "PYTHONPATH": REPOSITORY, "OMP_NUM_THREADS": "1"}
    return {"args": [sys.executable, os.path.join(REPOSITORY, "run_recbole_kd.py"), *args],
            "env": env, "text": True}


def run_command(args: list[str], workdir) -> subprocess.CompletedProcess:
    """Run ``python run_recbole_kd.py ARGS`` in ``workdir`` to the end."""
    return subprocess.run(**command(args), cwd=workdir, capture_output=True, check=False)


def test_a_run_from_the_command_line_trains_saves_and_exports(small_data, workdir):
    done = run_command([*small_args(small_data, "RRD"), "--epochs=2"], workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    for pattern in ("RRD-*-last.pth", "RRD-*-student.pth", "teacher-BPR-ml-small-*.pth"):
        assert len(glob.glob(f"saved/{pattern}")) == 1, pattern
    best = [p for p in glob.glob("saved/RRD-*.pth") if not p.endswith(("-last.pth", "-student.pth"))]
    assert len(best) == 1


def test_a_comparison_from_the_command_line_passes_settings_to_every_run(small_data, workdir):
    (workdir / "pair.yaml").write_text(yaml.safe_dump(pair_overrides("BPR", "BPR")))
    args = ["--compare", "-d", "ml-small", f"--data_path={small_data}", "--config_files",
            "pair.yaml", "--baselines", "Pop", "--methods", "RRD", "--results", "out",
            "--epochs=2", "--stopping_step=1", "--eval_batch_size=409600", "--rrd_top_n=50",
            "--rrd_interesting=5", "--rrd_uninteresting=5", "--state=ERROR"]
    done = run_command(args, workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| RRD |" in done.stdout and "| student alone |" in done.stdout
    with open(workdir / "out" / "runs.csv") as f:
        rows = {row["run"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"teacher alone", "student alone", "Pop", "RRD"}
    # --epochs=2 reached the models trained alone and the method (Pop trains one epoch).
    assert {rows[name]["epochs"] for name in ("teacher alone", "student alone", "RRD")} == {"2"}


def test_seed_on_the_command_line_is_the_run_s_seed_not_compare_s_seeds(small_data, monkeypatch):
    from recbole_kd import cli

    seen = {}
    monkeypatch.setattr(cli, "run_recbole_kd",
                        lambda **kwargs: seen.update(kwargs["config_dict"]))
    cli.main(["-m", "BPR", "--seed=7", "--epochs=3"])
    assert seen == {"seed": "7", "epochs": "3"}


def test_a_misspelled_recbole_key_is_a_warning_naming_the_closest_key(small_data):
    with pytest.warns(KDConfigWarning, match="'learing_rate'.*Did you mean 'learning_rate'"):
        make_config("BPR", small_data, learing_rate=0.01)


def test_runs_started_in_the_same_second_get_their_own_files(small_data, monkeypatch):
    monkeypatch.setattr(factory, "get_local_time", lambda: "Dec-06-2026_00-00-00")
    config = {**fast("BPR"), "data_path": small_data, "embedding_size": 8}
    first = run_recbole_kd("BPR", config_dict=config)
    second = run_recbole_kd("BPR", config_dict=config)
    assert first["saved_model_file"] != second["saved_model_file"]
    assert os.path.isfile(first["saved_model_file"]) and os.path.isfile(second["saved_model_file"])


def test_compare_names_are_separated_by_commas_or_spaces():
    sys.path.insert(0, REPOSITORY)
    try:
        from run_recbole_kd import names
    finally:
        sys.path.remove(REPOSITORY)
    assert names("RD,CD") == names("RD CD") == names(" RD, CD ") == ["RD", "CD"]
    assert names("") == []


def tensorboard_writer_threads() -> int:
    return sum(type(thread).__name__ == "_AsyncWriterThread" for thread in threading.enumerate())


def test_a_run_closes_its_tensorboard_writer(small_data):
    # A writer left open keeps a thread that later flushes into a folder that may be gone.
    before = tensorboard_writer_threads()
    run_recbole_kd("BPR", config_dict={**fast("BPR"), "data_path": small_data, "embedding_size": 8})
    assert tensorboard_writer_threads() == before
