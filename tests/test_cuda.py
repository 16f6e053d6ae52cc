"""On a CUDA machine every method trains and evaluates on the GPU (skipped elsewhere)."""

from __future__ import annotations

import math

import pytest
import torch
from recbole.utils import init_logger

from tests.conftest import build, make_config, pair_overrides, trainer_for

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("model_name", ["DE", "RRD", "DERRD", "BD"])
@pytest.mark.parametrize("teacher,student", [("BPR", "BPR"), ("LightGCN", "NeuMF")])
def test_one_epoch_on_cuda(small_data, model_name, teacher, student):
    config = make_config(model_name, small_data, use_gpu=True, gpu_id="0",
                         **pair_overrides(teacher, student))
    assert config["device"].type == "cuda"
    init_logger(config)
    *loaders, model = build(config)
    assert all(p.is_cuda for p in model.parameters())
    trainer = trainer_for(config, model, loaders)
    trainer.fit(loaders[0], loaders[1], saved=False)
    assert all(math.isfinite(loss) for loss in trainer.train_loss_dict.values())
    assert all(p.is_cuda for p in model.parameters())
    result = trainer.evaluate(loaders[2], load_best_model=False)
    assert 0 <= result["ndcg@10"] <= 1


def cuda_settings(model_name: str, small_data: str, **overrides) -> dict:
    from tests.conftest import fast

    return {**fast(model_name), "data_path": small_data, "use_gpu": True, "gpu_id": "0",
            **overrides}


@pytest.mark.parametrize("model_name", ["DERRD", "BD", "DCD"])
def test_a_run_on_cuda_resumes_bit_for_bit(small_data, monkeypatch, model_name):
    """Resume points of a CUDA run restore their random states (CPU byte tensors), and the
    resumed run ends as the uninterrupted one (deterministic kernels: kd_deterministic)."""
    import glob

    from recbole_kd.key_checks import settings_for
    from recbole_kd.quick_start import run_recbole_kd
    from recbole_kd.trainer.resumable import ResumableTrainer
    from tests.conftest import assert_same
    from tests.test_final_runs import Interrupted, saved_state

    config = {**cuda_settings(model_name, small_data, epochs=3, stopping_step=100),
              **settings_for(model_name, {"bd_update_epochs": 2})}
    straight = run_recbole_kd(model_name, config_dict=config)
    (straight_point,) = glob.glob(f"saved/{model_name}-*-last.pth")
    save = ResumableTrainer._save_resume_point

    def save_then_stop(self, epoch, *args, **kwargs):
        save(self, epoch, *args, **kwargs)
        if epoch == 0 and type(self.model).__name__ == model_name:
            raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(ResumableTrainer, "_save_resume_point", save_then_stop)
        with pytest.raises(Interrupted):
            run_recbole_kd(model_name, config_dict=config)
    (point,) = set(glob.glob(f"saved/{model_name}-*-last.pth")) - {straight_point}
    resumed = run_recbole_kd(model_name, config_dict={**config, "kd_resume": point})
    assert resumed["test_result"] == straight["test_result"]
    assert_same(saved_state(resumed["student_file"]), saved_state(straight["student_file"]))


def test_an_export_made_on_cuda_loads_with_stock_recbole_on_a_cpu(small_data, workdir):
    import json
    import os
    import subprocess
    import sys

    from recbole_kd.quick_start import run_recbole_kd
    from tests.test_export import STOCK_RELOAD

    result = run_recbole_kd("RRD", config_dict=cuda_settings("RRD", small_data))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # a machine without a GPU
    out = subprocess.run([sys.executable, "-c", STOCK_RELOAD, result["student_file"]],
                         capture_output=True, text=True, cwd=workdir, env=env, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    reloaded = json.loads(out.stdout.strip().splitlines()[-1])
    reloaded.pop("model"), reloaded.pop("size")
    for metric, value in result["test_result"].items():  # another device: last digits may differ
        assert reloaded[metric] == pytest.approx(value, abs=2e-4), metric


def test_deterministic_kernels_are_asked_for_on_cuda(small_data):
    import os

    config = make_config("RRD", small_data, use_gpu=True, gpu_id="0")
    assert torch.are_deterministic_algorithms_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and config["reproducibility"]
