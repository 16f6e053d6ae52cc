"""Several teachers: each trained and cached alone (or read and checked) like a single teacher,
distilled from as their rank aggregate by the score-based methods, refused by the others."""

from __future__ import annotations

import glob
import math

import pytest
import torch

from recbole_kd.errors import BackboneError, CheckpointError, KDConfigError
from recbole_kd.key_checks import settings_for
from recbole_kd.model.ensemble import rank_aggregate
from recbole_kd.quick_start import run_recbole_kd
from tests.conftest import build, fast, make_config

TEACHERS = [{"model": "BPR", "config": {"embedding_size": 32, "epochs": 2}},
            {"model": "LightGCN", "config": {"embedding_size": 32, "n_layers": 1, "epochs": 2}}]


def settings(method: str, small_data: str, **overrides) -> dict:
    return {**fast(method), "data_path": small_data, "teachers": TEACHERS, **overrides}


def test_the_rank_aggregate_by_hand():
    first = torch.tensor([[0.9, 0.1, 0.5], [0.0, 2.0, 1.0]])
    second = torch.tensor([[1.0, 3.0, 2.0], [5.0, 4.0, 3.0]])
    got = rank_aggregate([first, second])
    ranks = [[[0, 2, 1], [2, 0, 1]], [[2, 0, 1], [0, 1, 2]]]  # [teacher][row][item]
    for row in range(2):
        for item in range(3):
            hand = sum(math.exp(-ranks[m][row][item] / 10) for m in range(2))
            assert got[row, item].item() == pytest.approx(hand, rel=1e-12)


@pytest.mark.parametrize("method", ["RRD", "RD", "CD", "DCD"])
def test_score_based_methods_distil_from_the_ensemble(small_data, method):
    extra = {"rd_dynamic_start_epoch": 0} if method == "RD" else {}
    result = run_recbole_kd(method, config_dict={**settings(method, small_data), **extra})
    assert 0 <= result["test_result"]["ndcg@10"] <= 1
    assert "teacher_alone_test_result" in result  # the ensemble, tested as the teacher alone


def test_rrd_lists_are_the_ensemble_s_top_items_and_each_teacher_is_cached_alone(small_data):
    config = make_config("RRD", small_data, teachers=TEACHERS)
    _, _, _, model = build(config)
    assert sorted(glob.glob("saved/teacher-*.pth")) == sorted(
        glob.glob("saved/teacher-BPR-*.pth") + glob.glob("saved/teacher-LightGCN-*.pth"))
    assert len(glob.glob("saved/teacher-*.pth")) == 2
    members = model.teacher.members
    users = torch.arange(1, 6)
    with torch.no_grad():
        scores = [net.all_item_scores(users) for net in model.teacher_net.nets]
        expected = rank_aggregate(scores).float()
        assert torch.equal(model.teacher_net.all_item_scores(users), expected)
    assert len(members) == 2 and type(members[1]).__name__ == "LightGCN"
    model.on_epoch_start(0)
    top = model.distillers[0].sampler.top_n[users]
    positives = torch.tensor(model.positives[users.numpy()].toarray() > 0)
    masked = expected.masked_fill(positives, -math.inf)
    masked[:, 0] = -math.inf
    best = masked.gather(1, top)
    assert torch.all(best[:, :-1] >= best[:, 1:])  # in the ensemble's order
    assert torch.all(best[:, -1:] >= masked.topk(top.shape[1] + 1).values[:, -1:])
    # A single-teacher run of the same BPR reuses its cached model: nothing is trained again.
    run_recbole_kd("RRD", config_dict={**fast("RRD"), "data_path": small_data,
                                       "teacher_config": TEACHERS[0]["config"]})
    assert len(glob.glob("saved/teacher-*.pth")) == 2


@pytest.mark.parametrize("method", ["DE", "HTD", "BD", "DERRD"])
def test_methods_that_need_one_teacher_refuse_several(small_data, method):
    with pytest.raises(BackboneError, match=f"{method} distils from a single teacher"):
        run_recbole_kd(method, config_dict={**settings_for(method, settings(method, small_data))})


def test_each_teacher_checkpoint_is_checked(small_data, stock_teacher):
    teachers = [{"model": "BPR", "checkpoint": stock_teacher}, TEACHERS[1]]
    with pytest.raises(CheckpointError, match="seed=2020, this run has seed=7"):
        run_recbole_kd("RRD", config_dict=settings("RRD", small_data, teachers=teachers, seed=7))


@pytest.mark.parametrize("teachers,message", [
    (TEACHERS[:1], "at least two"),
    ([{"model": "BPR", "config": {"embeding_size": 8}}, TEACHERS[1]],
     "'teachers\\[0\\].config.embeding_size' is not a setting"),
    ([{"model": "BPR", "cfg": {}}, TEACHERS[1]], "at least two"),
])
def test_a_bad_list_of_teachers_is_refused(small_data, teachers, message):
    with pytest.raises(KDConfigError, match=message):
        make_config("RRD", small_data, teachers=teachers)
