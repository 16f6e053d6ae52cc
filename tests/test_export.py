"""The distilled student is a plain RecBole checkpoint: stock RecBole reloads it and scores alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from recbole_kd.quick_start import load_data_and_model, run_recbole_kd
from tests.conftest import fast, pair_overrides

# Runs in a fresh interpreter where importing recbole_kd is impossible: only RecBole is used.
STOCK_RELOAD = """
import json, os, sys
sys.modules["recbole_kd"] = None
os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
from recbole.config import Config
from recbole.quick_start import load_data_and_model
from recbole.trainer import Trainer
Config.compatibility_settings(None)  # RecBole's numpy aliases, which only Config() installs
config, model, dataset, train_data, valid_data, test_data = load_data_and_model(sys.argv[1])
config["state"] = "ERROR"
result = Trainer(config, model).evaluate(test_data, load_best_model=False)
print(json.dumps({"model": config["model"], "size": config["embedding_size"], **result}))
"""


@pytest.mark.parametrize("teacher,student", [("BPR", "BPR"), ("BPR", "LightGCN")])
def test_exported_student_reloads_in_stock_recbole_with_identical_metrics(
    small_data, workdir, teacher, student
):
    result = run_recbole_kd("DERRD", config_dict={**fast("DERRD"), "epochs": 2, "data_path": small_data,
                              **pair_overrides(teacher, student)},
    )
    path = result["student_file"]
    assert os.path.isfile(path)
    out = subprocess.run(
        [sys.executable, "-c", STOCK_RELOAD, path],
        capture_output=True, text=True, cwd=workdir, check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    reloaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert reloaded.pop("model") == student and reloaded.pop("size") == 8
    assert reloaded == dict(result["test_result"])


def test_distillation_checkpoint_reloads_with_the_plugin(small_data):
    result = run_recbole_kd("RRD", config_dict={**fast("RRD"), "data_path": small_data})
    config, model, _, _, _, test_data = load_data_and_model(result["saved_model_file"])
    assert config["model"] == "RRD" and config["teacher_config"] == {"embedding_size": 32}
    from recbole_kd.trainer import KDTrainer

    config["state"] = "ERROR"
    trainer = KDTrainer(config, model)
    assert dict(trainer.evaluate(test_data, load_best_model=False)) == dict(result["test_result"])
