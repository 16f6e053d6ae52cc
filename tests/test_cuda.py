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
