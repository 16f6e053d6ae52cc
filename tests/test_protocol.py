"""kd_eval_protocol: fixed_sampled ranks each held-out item among fixed, shared negatives."""

from __future__ import annotations

import math
import os

import pytest
import torch
import yaml
from recbole.trainer import TraditionalTrainer, Trainer

from recbole_kd.errors import KDConfigError
from recbole_kd.eval_protocol import (
    CandidateSets,
    FixedSampledEvaluation,
    attach_candidates,
    uses_candidates,
)
from recbole_kd.properties import properties_dir
from recbole_kd.quick_start import run_recbole_kd
from recbole_kd.trainer.mixins import with_mixin
from tests.conftest import build, fast, make_config, trainer_for

PROTOCOL_FILE = os.path.join(properties_dir(), "protocols", "derrd.yaml")


def protocol_settings(**overrides) -> dict:
    with open(PROTOCOL_FILE, encoding="utf-8") as f:
        return {**yaml.safe_load(f), **overrides}


def protocol_run(small_data, **overrides):
    """(config, trainer, (train, valid, test) loaders) of an untrained BPR under the protocol."""
    config = make_config("BPR", small_data, **protocol_settings(**overrides))
    train_data, valid_data, test_data, model = build(config)
    loaders = (train_data, valid_data, test_data)
    trainer = with_mixin(FixedSampledEvaluation, Trainer)(config, model)
    attach_candidates(trainer, config, loaders)
    return config, trainer, loaders


def held_out(loader) -> dict[int, int]:
    """user -> the loader's held-out item (leave-one-out: one per user)."""
    inter = loader._dataset.inter_feat
    return dict(zip(inter["user_id"].tolist(), inter["item_id"].tolist()))


def fixed_scores(model, table: torch.Tensor) -> None:
    """Make ``model`` score users x items from ``table`` [n_users, n_items]."""
    model.full_sort_predict = lambda interaction: table[interaction["user_id"]].flatten().clone()


def capture_candidates(trainer) -> list[dict[int, set[int]]]:
    """Record, per evaluation, each user's items left with a finite score (its candidates)."""
    evaluations: list[dict[int, set[int]]] = []
    original = trainer._full_sort_batch_eval

    def spy(batched_data):
        interaction, scores, positive_u, positive_i = original(batched_data)
        for user, row in zip(interaction["user_id"].tolist(), torch.isfinite(scores)):
            evaluations[-1][user] = set(row.nonzero().flatten().tolist())
        return interaction, scores, positive_u, positive_i

    trainer._full_sort_batch_eval = spy
    return evaluations


def test_negatives_are_never_interacted_items_and_drawn_once(small_data):
    config, _, loaders = protocol_run(small_data)
    parts = [loader._dataset for loader in loaders]
    state = torch.get_rng_state()
    candidates = CandidateSets.from_parts(config, parts)
    assert torch.equal(torch.get_rng_state(), state)  # a dedicated generator: training unchanged
    seen: dict[int, set[int]] = {}
    for part in parts:
        for user, item in zip(part.inter_feat["user_id"].tolist(), part.inter_feat["item_id"].tolist()):
            seen.setdefault(user, set()).add(item)
    for user, items in seen.items():
        negatives = set(candidates.negatives[user].tolist())
        assert len(negatives) == 499 and not negatives & items and 0 not in negatives
    assert torch.equal(CandidateSets.from_parts(config, parts).negatives, candidates.negatives)
    config["seed"] += 1
    assert not torch.equal(CandidateSets.from_parts(config, parts).negatives, candidates.negatives)


def test_draw_is_uniform_over_the_allowed_items():
    users = torch.tensor([1, 1])
    exact = CandidateSets.draw(users, torch.tensor([1, 2]), 2, 6, 3, seed=0)
    assert set(exact.negatives[1].tolist()) == {3, 4, 5}  # the only never-interacted items
    free = CandidateSets.draw(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long),
                              20000, 11, 3, seed=0)
    frequency = torch.bincount(free.negatives.flatten().long(), minlength=11) / 20000
    assert frequency[0] == 0
    assert torch.allclose(frequency[1:], torch.full((10,), 0.3), atol=0.015)


def test_too_many_negatives_names_the_key():
    with pytest.raises(KDConfigError, match="kd_eval_negatives = 3.*user 1.* only 2 items"):
        CandidateSets.draw(torch.tensor([1, 1]), torch.tensor([1, 2]), 2, 5, 3, seed=0)


def test_candidates_are_fixed_and_shared_by_validation_and_test(small_data):
    _, trainer, (_, valid_data, test_data) = protocol_run(small_data)
    evaluations = capture_candidates(trainer)
    results = []
    for loader in (valid_data, valid_data, test_data):
        evaluations.append({})
        results.append(trainer.evaluate(loader, load_best_model=False))
    first, again, test = evaluations
    assert first == again and results[0] == results[1]
    valid_items, test_items = held_out(valid_data), held_out(test_data)
    assert set(first) == set(valid_items)
    for user, valid_item in valid_items.items():
        test_item = test_items[user]
        assert valid_item in first[user] and test_item not in first[user]
        assert test_item in test[user] and valid_item not in test[user]
        assert first[user] - {valid_item} == test[user] - {test_item}
        assert len(first[user]) == 500


def test_other_held_out_item_is_left_out_of_validation(small_data):
    config, trainer, (_, valid_data, test_data) = protocol_run(
        small_data, metrics=["Hit", "MRR"], topk=[1, 5], valid_metric="Hit@5"
    )
    dataset = valid_data._dataset
    table = torch.rand(dataset.user_num, dataset.item_num, generator=torch.Generator().manual_seed(0))
    for user, item in held_out(test_data).items():
        table[user, item] = 10.0  # ranked first under full ranking...
    for user, item in held_out(valid_data).items():
        table[user, item] = 5.0  # ...so the validation item comes second
    fixed_scores(trainer.model, table)
    full = Trainer(config, trainer.model).evaluate(valid_data, load_best_model=False)
    assert full["hit@1"] == 0 and full["mrr@5"] == 0.5
    sampled = trainer.evaluate(valid_data, load_best_model=False)
    assert sampled["hit@1"] == 1 and sampled["mrr@5"] == 1


def test_metrics_equal_a_direct_computation(small_data):
    _, trainer, (_, _, test_data) = protocol_run(small_data)
    dataset = test_data._dataset
    table = torch.randn(dataset.user_num, dataset.item_num, generator=torch.Generator().manual_seed(1))
    targets = held_out(test_data)
    for user, item in targets.items():
        table[user, item] += 2.5  # targets spread over the top ranks, not all at the top
    fixed_scores(trainer.model, table)
    reported = trainer.evaluate(test_data, load_best_model=False)
    expected = {f"{name}@{k}": 0.0 for name in ("hit", "ndcg", "mrr") for k in (5, 10, 20)}
    for user, item in targets.items():
        negatives = trainer.candidates.negatives[user].long()
        rank = 1 + int((table[user, negatives] > table[user, item]).sum())
        for k in (5, 10, 20):
            if rank <= k:
                expected[f"hit@{k}"] += 1 / len(targets)
                expected[f"ndcg@{k}"] += 1 / math.log2(rank + 1) / len(targets)
                expected[f"mrr@{k}"] += 1 / rank / len(targets)
    assert 0.1 < expected["hit@5"] < 0.9  # the case exercises many ranks
    for key, value in expected.items():
        assert reported[key] == pytest.approx(value, abs=1e-4), key


@pytest.mark.parametrize("model", ["BPR", "RRD", "Pop"])
def test_runs_through_run_recbole_kd(small_data, model, monkeypatch):
    calls = []
    original = FixedSampledEvaluation._full_sort_batch_eval

    def counted(self, batched_data):
        calls.append(type(self))
        return original(self, batched_data)

    monkeypatch.setattr(FixedSampledEvaluation, "_full_sort_batch_eval", counted)
    settings = {**fast(model), "data_path": small_data}
    result = run_recbole_kd(model, config_file_list=[PROTOCOL_FILE], config_dict=settings,
                            saved=False)
    test = result["test_result"]
    assert set(test) == {f"{name}@{k}" for name in ("hit", "ndcg", "mrr") for k in (5, 10, 20)}
    assert 0 < test["hit@5"] <= test["hit@10"] <= test["hit@20"] <= 1
    assert calls  # validation and test went through the candidate mask
    if model == "Pop":
        assert issubclass(calls[0], TraditionalTrainer)
        full = run_recbole_kd(model, config_file_list=[PROTOCOL_FILE],
                              config_dict={**settings, "kd_eval_protocol": "full"}, saved=False)
        # 500 candidates instead of every item: the same model hits more often.
        assert test["hit@10"] > full["test_result"]["hit@10"]


@pytest.mark.parametrize(
    "eval_args,problem",
    [({"split": {"RS": [0.8, 0.1, 0.1]}}, "eval_args.split"),
     ({"split": {"LS": "valid_and_test"}, "mode": "uni499"}, "eval_args.mode")],
)
def test_without_leave_one_out_full_sort_names_the_keys(small_data, eval_args, problem):
    with pytest.raises(KDConfigError, match=f"{problem}.*LS: valid_and_test"):
        make_config("BPR", small_data, kd_eval_protocol="fixed_sampled", eval_args=eval_args)


def test_full_protocol_keeps_recbole_trainers(small_data):
    config = make_config("BPR", small_data)
    assert config["kd_eval_protocol"] == "full" and not uses_candidates(config)
    _, _, _, model = build(config)
    assert not isinstance(trainer_for(config, model), FixedSampledEvaluation)
    with pytest.raises(KDConfigError, match="kd_eval_protocol"):
        make_config("BPR", small_data, kd_eval_protocol="sampled")
