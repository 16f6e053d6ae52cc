"""Every bad input stops a run with an error naming the key or file and the fix, and nothing
already trained is lost (one parametrised test over the whole list)."""

from __future__ import annotations

import glob
import os
import shutil

import pytest
import torch
from recbole.utils import init_logger

from recbole_kd.trainer import KDTrainer
from tests.conftest import build, digests, make_config, working_in

LEAVE_ONE_OUT = {"split": {"LS": "valid_and_test"}, "order": "RO", "group_by": "user",
                 "mode": "full"}
OTHER_SPLIT = {"split": {"RS": [0.7, 0.2, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"}


@pytest.fixture(scope="module")
def trained_folder(small_data, tmp_path_factory) -> str:
    """A saved/ folder holding a teacher that a valid DERRD run trained and cached."""
    folder = tmp_path_factory.mktemp("trained")
    with working_in(folder):
        first_epoch(small_data)
    assert glob.glob(str(folder / "saved" / "teacher-*.pth"))
    return str(folder / "saved")


def first_epoch(small_data, model="DERRD", **overrides):
    config = make_config(model, small_data, **overrides)
    init_logger(config)
    _, _, _, net = build(config)
    net.on_epoch_start(0)


def with_checkpoint(kind: str):
    """A run whose teacher_checkpoint is a file of ``kind``, written in the work folder."""

    def run(small_data, workdir, stock):
        path = str(workdir / "teacher.pth")
        if kind == "corrupt":
            (workdir / "teacher.pth").write_bytes(b"not a checkpoint")
        elif kind == "foreign":
            torch.save({"weights": torch.zeros(3)}, path)
        elif kind == "stock":
            shutil.copy(stock, path)
        first_epoch(small_data, teacher_checkpoint=path)

    return run


def stock_with(**overrides):
    return lambda small_data, workdir, stock: first_epoch(
        small_data, teacher_checkpoint=stock, **overrides)


def other_data_set(small_data, workdir, stock):
    other = os.path.join(small_data, "ml-other")
    os.makedirs(other, exist_ok=True)
    with open(os.path.join(small_data, "ml-small", "ml-small.inter")) as src:
        lines = src.readlines()[:15000]
    with open(os.path.join(other, "ml-other.inter"), "w") as dst:
        dst.writelines(lines)
    first_epoch(small_data, dataset="ml-other", teacher_checkpoint=stock)


def short_users(small_data, workdir, stock):
    os.makedirs(workdir / "short" / "short")
    with open(os.path.join(small_data, "ml-small", "ml-small.inter")) as src:
        lines = src.readlines()
    user = lines[1].split("\t")[0]
    kept = [lines[0]] + [line for line in lines[1:] if line.split("\t")[0] != user]
    kept += [line for line in lines[1:] if line.split("\t")[0] == user][:2]
    (workdir / "short" / "short" / "short.inter").write_text("".join(kept))
    first_epoch(str(workdir / "short"), "RRD", dataset="short", eval_args=LEAVE_ONE_OUT)


def nan_loss(small_data, workdir, stock):
    checkpoint = torch.load(stock, weights_only=False)
    checkpoint["state_dict"]["user_embedding.weight"][:] = float("nan")
    path = str(workdir / "nan-teacher.pth")
    torch.save(checkpoint, path)
    config = make_config("DE", small_data, teacher_checkpoint=path)
    init_logger(config)
    train_data, valid_data, _, model = build(config)
    KDTrainer(config, model).fit(train_data, valid_data, saved=False)


def settings(model="DERRD", **overrides):
    return lambda small_data, workdir, stock: first_epoch(small_data, model, **overrides)


CASES = {
    "missing teacher checkpoint": (with_checkpoint("missing"), "teacher_checkpoint .* does not exist"),
    "corrupt teacher checkpoint": (with_checkpoint("corrupt"), "could not be read"),
    "non-RecBole checkpoint": (with_checkpoint("foreign"), "is not a RecBole checkpoint"),
    "checkpoint of another data set": (other_data_set, "trained on data set 'ml-small'"),
    "checkpoint of another split": (stock_with(eval_args=OTHER_SPLIT), "eval_args"),
    "checkpoint of another seed": (stock_with(seed=7), "seed=2020.*seed=7"),
    "checkpoint of another filtering": (stock_with(user_inter_num_interval="[5,inf)"),
                                        "user_inter_num_interval"),
    "checkpoint of another model than named": (stock_with(teacher_model="LightGCN"),
                                               "holds a BPR model, but teacher_model is LightGCN"),
    "unknown teacher model": (settings(teacher_model="BRP"), "Unknown model 'BRP'"),
    "unknown student model": (settings(student_model="Nope"), "Unknown model 'Nope'"),
    "sequential student": (settings(student_model="SASRec"), "student_model SASRec is a sequential"),
    "user-row model as teacher": (settings(teacher_model="DiffRec"), "whole user rows"),
    "DE without representations": (settings(teacher_model="MultiVAE"),
                                    "DE needs user and item representations"),
    "negative weight": (settings(de_weight=-1), "de_weight"),
    "temperature <= 0": (settings(de_tau_start=0), "de_tau_start"),
    "BD temperature <= 0": (settings("BD", bd_tau=-1.0), "bd_tau"),
    "K larger than the top-N list": (settings(rrd_interesting=60), "rrd_interesting"),
    "L larger than the items a user can have": (settings(rrd_uninteresting=100000),
                                                "rrd_uninteresting"),
    "top-N longer than the catalogue": (settings(rrd_top_n=100000), "rrd_top_n"),
    "bd_update_epochs <= 0": (settings("BD", bd_update_epochs=0), "bd_update_epochs"),
    "misspelled plugin key": (settings(rrd_wieght=0.1), "'rrd_wieght'.*Did you mean 'rrd_weight'"),
    "users too short for leave-one-out": (short_users, r"user_inter_num_interval: \"\[3,inf\)\""),
    "NaN loss": (nan_loss, "'de_loss' is nan.*learning_rate"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_named_and_nothing_trained_is_lost(small_data, workdir, stock_teacher,
                                                        trained_folder, case):
    run, message = CASES[case]
    shutil.copytree(trained_folder, "saved")
    before = digests("saved")
    stock_before = digests(os.path.dirname(stock_teacher))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run(small_data, workdir, stock_teacher)
    # Whatever was trained before the error stays on disk, unchanged.
    after = digests("saved")
    assert {path: after.get(path) for path in before} == before
    assert digests(os.path.dirname(stock_teacher)) == stock_before
    assert not glob.glob("saved/*.partial")


def test_a_teacher_trained_before_an_error_is_reused_by_the_fixed_run(small_data):
    with pytest.raises(ValueError, match="rrd_uninteresting"):
        first_epoch(small_data, rrd_uninteresting=100000)
    (teacher,) = glob.glob("saved/teacher-*.pth")
    stamp = os.path.getmtime(teacher)
    first_epoch(small_data)
    assert glob.glob("saved/teacher-*.pth") == [teacher] and os.path.getmtime(teacher) == stamp
