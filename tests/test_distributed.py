"""Distributed runs: two (and three) gloo processes on CPU, on the small slice of ml-100k."""

from __future__ import annotations

import glob
import os
from functools import partial

import pytest
import torch
from conftest import FAST, assert_same, fast
from distributed_helpers import (
    evaluate_weights,
    free_port,
    run_killed_after_epoch,
    train_and_gather_weights,
)
from recbole.quick_start import load_data_and_model
from recbole.utils import init_seed
from test_resume import SETTINGS as RESUME_SETTINGS
from test_resume import checkpoint_state

from recbole_kd import distributed
from recbole_kd.config import KDConfig
from recbole_kd.errors import CheckpointError, TrainingError
from recbole_kd.key_checks import settings_for
from recbole_kd.quick_start import prepare_run, run_recbole_kd
from recbole_kd.trainer.kd_trainer import rank_state

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="this PyTorch has no torch.distributed")


def settings(model: str, small_data: str, **more) -> dict:
    return {**fast(model), "data_path": small_data, "epochs": 2, **more}


@pytest.mark.parametrize("model", ["DE", "RRD", "DERRD", "BD"])
def test_two_processes_write_one_run_whose_exports_load_in_stock_recbole(model, small_data):
    result = run_recbole_kd(model, "ml-small", config_dict=settings(model, small_data),
                            nproc=2, port=free_port())
    run = os.path.splitext(os.path.basename(result["saved_model_file"]))[0]
    exports = ["student", "teacher"] if model == "BD" else ["student"]
    written = sorted(os.path.basename(p) for p in glob.glob(f"saved/{model}-*"))
    assert written == sorted([f"{run}.pth", f"{run}-last.pth",
                              *(f"{run}-{role}.pth" for role in exports)])
    assert not glob.glob("saved/*.tmp") and not glob.glob("saved/*.partial")
    for role in exports:  # a plain process, no process group: stock RecBole alone
        config, net, _, _, _, test_data = load_data_and_model(result[f"{role}_file"])
        assert config["single_spec"] and "world_size" not in config.final_config_dict
        assert config["device"] == torch.device("cpu")
        assert isinstance(net, torch.nn.Module) and len(test_data) > 0


@pytest.mark.parametrize("model", ["DERRD", "BD"])
def test_every_rank_ends_with_the_same_weights(model, small_data):
    by_rank = distributed.spawn(
        train_and_gather_weights, 2, -1, "localhost", free_port(), 0,
        settings(model, small_data), args=(model, "ml-small", None))
    assert len(by_rank) == 2 and by_rank[0] == by_rank[1]
    assert any("student" in name for name in by_rank[0])


def test_metrics_over_one_two_and_three_ranks_agree(small_data):
    config_dict = {**FAST, "data_path": small_data, "embedding_size": 16,
                   "metric_decimal_place": 12, "topk": [5, 10, 20],
                   "metrics": ["Recall", "MRR", "NDCG", "Hit", "Precision", "MAP"]}
    config = KDConfig("BPR", "ml-small", config_dict=config_dict)
    init_seed(2020, True)
    model = prepare_run(config).model
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 1)  # weights that rank items apart, fixed for every world size
    torch.save(model.state_dict(), "weights.pt")
    one = evaluate_weights("BPR", "ml-small", None, config_dict, "weights.pt")
    for ranks in (2, 3):
        many = distributed.spawn(
            partial(evaluate_weights, state_file="weights.pt"), ranks, -1, "localhost",
            free_port(), 0, config_dict, args=("BPR", "ml-small", None))
        assert many.keys() == one.keys()
        for key in one:
            assert many[key] == pytest.approx(one[key], abs=1e-9), (ranks, key)
    assert one["hit@20"] > 0


def test_an_error_on_the_ranks_ends_the_run_with_that_error(small_data):
    with pytest.raises(CheckpointError, match="teacher_checkpoint 'missing.pth' does not exist"):
        run_recbole_kd("RRD", "ml-small", nproc=2, port=free_port(),
                       config_dict=settings("RRD", small_data, teacher_checkpoint="missing.pth"))
    assert not glob.glob("saved/RRD-*")


def test_a_resume_point_continues_only_with_the_same_number_of_processes():
    two_ranks = {"by_rank": {"rng": [{"torch": 1}, {"torch": 2}], "extra_state": [{}, {}]}}
    with pytest.raises(CheckpointError, match="run of 2 process.*this run has 1"):
        rank_state(two_ranks, "RRD-last.pth")
    assert rank_state({"rng": {"torch": 3}}, "RRD-last.pth") == ({"torch": 3}, {})


def test_a_killed_two_process_run_resumes_to_the_same_end(small_data):
    config = {**settings("BD", small_data), **settings_for("BD", RESUME_SETTINGS)}
    straight = run_recbole_kd("BD", "ml-small", config_dict=config, nproc=2, port=free_port())
    (straight_last,) = glob.glob("saved/BD-*-last.pth")
    with pytest.raises(TrainingError, match="failed"):
        distributed.spawn(partial(run_killed_after_epoch, 1), 2, -1, "localhost", free_port(),
                          0, config, args=("BD", "ml-small", None))
    (killed_last,) = set(glob.glob("saved/BD-*-last.pth")) - {straight_last}
    assert torch.load(killed_last, weights_only=False)["epoch"] == 1
    resumed = run_recbole_kd("BD", "ml-small", config_dict={**config, "kd_resume": killed_last},
                             nproc=2, port=free_port())
    assert resumed["test_result"] == straight["test_result"]
    assert resumed["teacher_test_result"] == straight["teacher_test_result"]
    assert_same(checkpoint_state(killed_last), checkpoint_state(straight_last))
    for role in ("teacher", "student"):
        assert_same(checkpoint_state(resumed[f"{role}_file"]),
                    checkpoint_state(straight[f"{role}_file"]))
