"""Teacher checkpoints are validated against the run; trained teachers are cached and reused."""

from __future__ import annotations

import glob
import os

import pytest
import torch
from recbole.quick_start import run_recbole
from recbole.utils import init_logger

from recbole_kd.quick_start import build, run_recbole_kd
from recbole_kd.teacher import CheckpointError
from tests.conftest import FAST, make_config

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
    _, _, _, model = build(config)
    saved = torch.load(stock_teacher, weights_only=False)["state_dict"]
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, saved[key])
    assert config["teacher_model"] == "BPR"
    assert config["teacher_config"]["embedding_size"] == 32


@pytest.mark.parametrize(
    "override,named",
    [
        ({"seed": 7}, "seed"),
        ({"eval_args": {"split": {"RS": [0.7, 0.2, 0.1]}, "order": "RO", "group_by": "user",
                        "mode": "full"}}, "eval_args"),
        ({"user_inter_num_interval": "[5,inf)"}, "user_inter_num_interval"),
    ],
)
def test_teacher_from_another_split_is_refused(small_data, stock_teacher, override, named):
    config = make_config("DERRD", small_data, teacher_checkpoint=stock_teacher, **override)
    init_logger(config)
    with pytest.raises(CheckpointError, match=named):
        build(config)


def test_teacher_from_another_data_set_is_refused(small_data, stock_teacher):
    other = os.path.join(small_data, "ml-other")
    os.makedirs(other, exist_ok=True)
    with open(os.path.join(small_data, "ml-small", "ml-small.inter")) as src:
        lines = src.readlines()[:15000]
    with open(os.path.join(other, "ml-other.inter"), "w") as dst:
        dst.writelines(lines)
    config = make_config("DERRD", small_data, dataset="ml-other", teacher_checkpoint=stock_teacher)
    init_logger(config)
    with pytest.raises(CheckpointError, match="data set 'ml-small'"):
        build(config)


def test_teacher_of_another_model_than_named_is_refused(small_data, stock_teacher):
    config = make_config("DERRD", small_data, teacher_checkpoint=stock_teacher,
                         teacher_model="LightGCN")
    init_logger(config)
    with pytest.raises(CheckpointError, match="holds a BPR model"):
        build(config)


@pytest.mark.parametrize("content", [None, b"not a checkpoint", "dict"])
def test_missing_or_corrupt_checkpoint_is_refused(small_data, workdir, content):
    path = str(workdir / "teacher.pth")
    if content == "dict":
        torch.save({"weights": torch.zeros(3)}, path)
    elif content is not None:
        with open(path, "wb") as f:
            f.write(content)
    config = make_config("RRD", small_data, teacher_checkpoint=path)
    init_logger(config)
    with pytest.raises(CheckpointError, match="teacher_checkpoint"):
        build(config)


def test_trained_teacher_is_cached_and_reused(small_data):
    first = run_recbole_kd("RRD", config_dict={**FAST, "data_path": small_data}, saved=False)
    cached = glob.glob("saved/teacher-BPR-ml-small-*.pth")
    assert len(cached) == 1 and not glob.glob("saved/*.partial")
    stamp = os.path.getmtime(cached[0])
    second = run_recbole_kd("RRD", config_dict={**FAST, "data_path": small_data}, saved=False)
    assert glob.glob("saved/teacher-*.pth") == cached and os.path.getmtime(cached[0]) == stamp
    assert first["test_result"] == second["test_result"]
    # Another teacher setting is another teacher.
    run_recbole_kd("RRD", config_dict={**FAST, "data_path": small_data,
                                       "teacher_config": {"embedding_size": 16}}, saved=False)
    assert len(glob.glob("saved/teacher-BPR-ml-small-*.pth")) == 2
