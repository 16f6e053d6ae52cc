"""Bad input stops a run with an error naming the key and the fix; nothing trained is lost.

Checkpoint problems are covered in test_teacher.py, unknown models and keys in test_config.py.
"""

from __future__ import annotations

import glob
import os

import pytest
import torch
from recbole.utils import init_logger

from recbole_kd.quick_start import build, run_recbole_kd
from recbole_kd.trainer import KDTrainer
from tests.conftest import FAST, make_config

LEAVE_ONE_OUT = {"split": {"LS": "valid_and_test"}, "order": "RO", "group_by": "user",
                 "mode": "full"}


def first_epoch(config):
    init_logger(config)
    _, _, _, model = build(config)
    model.on_epoch_start(0)


@pytest.mark.parametrize(
    "overrides,named",
    [
        ({"rrd_uninteresting": 100000}, "rrd_uninteresting"),
        ({"rrd_interesting": 60}, "rrd_interesting"),  # more than rrd_top_n = 50
        ({"rrd_top_n": 100000}, "rrd_top_n"),
    ],
)
def test_impossible_sampling_sizes_name_the_key_and_keep_the_teacher(small_data, overrides, named):
    with pytest.raises(ValueError, match=named):
        first_epoch(make_config("DERRD", small_data, **overrides))
    (teacher,) = glob.glob("saved/teacher-*.pth")  # trained before the error, and kept
    stamp = os.path.getmtime(teacher)
    first_epoch(make_config("DERRD", small_data))  # the fixed run reuses it
    assert glob.glob("saved/teacher-*.pth") == [teacher] and os.path.getmtime(teacher) == stamp


def test_users_too_short_for_leave_one_out_are_named(small_data, tmp_path):
    folder = tmp_path / "short"
    os.makedirs(folder / "short")
    with open(os.path.join(small_data, "ml-small", "ml-small.inter")) as src:
        lines = src.readlines()
    user = lines[1].split("\t")[0]
    kept = [lines[0]] + [line for line in lines[1:] if line.split("\t")[0] != user]
    kept += [line for line in lines[1:] if line.split("\t")[0] == user][:2]
    (folder / "short" / "short.inter").write_text("".join(kept))
    config = make_config("RRD", str(folder), dataset="short", eval_args=LEAVE_ONE_OUT)
    with pytest.raises(ValueError, match=r"user_inter_num_interval: \"\[3,inf\)\""):
        build(config)


def test_nan_loss_names_the_term(small_data, workdir):
    run_recbole_kd("BPR", config_dict={**{k: v for k, v in FAST.items()
                                          if not k.startswith(("teacher", "student"))},
                                       "embedding_size": 32, "data_path": small_data})
    (path,) = glob.glob("saved/BPR-*.pth")
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["state_dict"]["user_embedding.weight"][:] = float("nan")
    torch.save(checkpoint, path)
    config = make_config("DE", small_data, teacher_checkpoint=path)
    init_logger(config)
    train_data, valid_data, _, model = build(config)
    trainer = KDTrainer(config, model)
    with pytest.raises(ValueError, match="'de_loss' is nan.*learning_rate"):
        trainer.fit(train_data, valid_data, saved=False)
