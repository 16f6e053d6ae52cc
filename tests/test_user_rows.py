"""User-row models (CDAE) as teacher and student of the methods that distil through scores."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
from recbole.data.dataloader import UserDataLoader
from recbole.data.interaction import Interaction

from recbole_kd.errors import BackboneError, KDConfigError
from recbole_kd.model import row_loss
from recbole_kd.model.row_loss import input_dropout, row_logits, sampled_negatives, sampled_row_loss
from recbole_kd.quick_start import run_recbole_kd
from tests.conftest import build, fast, make_config, trainer_for
from tests.test_export import STOCK_RELOAD

CDAE_PAIR = {"teacher_model": "CDAE", "teacher_config": {"embedding_size": 16},
             "student_model": "CDAE", "student_config": {"embedding_size": 4}}


def test_cdae_scores_are_logits_of_one_forward_per_unique_user(small_data):
    _, _, _, model = build(make_config("RRD", small_data, **CDAE_PAIR))
    net, cdae = model.teacher_net, model.teacher  # the frozen teacher: eval mode, no dropout
    users = torch.tensor([3, 1, 3, 7])
    items = torch.tensor([[5, 9], [2, 2], [11, 5], [1, 4]])
    with torch.no_grad():
        rows = cdae.forward(cdae.get_rating_matrix(users), users)
        expected = rows.gather(1, items)
        assert torch.allclose(net.score(users, items), expected)
        assert torch.allclose(net.all_item_scores(users), rows)
        # Evaluation ranks what stock RecBole ranks: its probabilities.
        stock = cdae.full_sort_predict(Interaction({cdae.USER_ID: users})).view(len(users), -1)
        assert torch.equal(net.evaluation_scores(users).view(len(users), -1), stock)


def test_cdae_own_loss_runs_once_per_unique_user(small_data, monkeypatch):
    _, _, _, model = build(make_config("RRD", small_data, **CDAE_PAIR))
    seen = []
    loss = model.student.calculate_loss
    monkeypatch.setattr(model.student, "calculate_loss",
                        lambda batch: seen.append(batch[model.USER_ID]) or loss(batch))
    user = torch.tensor([4, 2, 4, 4, 9])
    model.student_net.base_loss(user, torch.tensor([1, 2, 3, 4, 5]), torch.tensor([6, 7, 8, 9, 10]))
    assert [users.tolist() for users in seen] == [[2, 4, 9]]


def test_bd_trains_cdae_both_ways_and_exports_models_stock_recbole_evaluates_alike(
        small_data, workdir):
    result = run_recbole_kd("BD", config_dict={**fast("BD"), "epochs": 2, "data_path": small_data,
                                               **CDAE_PAIR})
    assert result["teacher_alone_test_result"] != result["teacher_test_result"]
    assert result["student_alone_test_result"] != result["test_result"]
    for role, key, size in (("teacher", "teacher_test_result", 16), ("student", "test_result", 4)):
        out = subprocess.run([sys.executable, "-c", STOCK_RELOAD, result[f"{role}_file"]],
                             capture_output=True, text=True, cwd=workdir, check=False)
        assert out.returncode == 0, out.stderr[-3000:]
        reloaded = json.loads(out.stdout.strip().splitlines()[-1])
        assert reloaded.pop("model") == "CDAE" and reloaded.pop("size") == size
        assert reloaded == dict(result[key]), role


@pytest.mark.parametrize("method", ["RRD", "RD", "CD"])
def test_score_methods_train_a_cdae_student(small_data, method):
    config = make_config(method, small_data, **CDAE_PAIR)
    train_data, _, _, model = build(config)
    teacher = model.teacher  # kept here: RRD and RD release it once prepared
    model.on_epoch_start(0)
    before = {k: v.clone() for k, v in model.student.state_dict().items()}
    losses = model.calculate_loss(next(iter(train_data)))
    assert all(torch.isfinite(loss) for loss in losses) and losses[1] > 0
    sum(losses).backward()
    assert model.student.h_user.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, model.student.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("method", ["DE", "DERRD", "HTD"])
def test_representation_methods_refuse_cdae_naming_what_it_supports(small_data, method):
    with pytest.raises(BackboneError, match="user-row model.*RRD, BD, RD, CD, DCD"):
        build(make_config(method, small_data, **CDAE_PAIR))


@pytest.mark.parametrize("rounds", [0, 1, row_loss.REJECTION_ROUNDS])
def test_sampled_negatives_are_never_interacted_items_drawn_uniformly(rounds, monkeypatch):
    # 0 rounds: every draw exact; 1: most by rejection, the rest exact; the shipped count.
    monkeypatch.setattr(row_loss, "REJECTION_ROUNDS", rounds)
    rows = torch.zeros(3, 12)
    rows[0, [1, 2, 3]] = 1.0
    rows[1, 5] = 1.0
    rows[2, 1:] = 1.0  # every item: nothing left to draw
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(12)
    for _ in range(3000):
        mask = sampled_negatives(rows, 2, generator)
        assert not (mask & (rows > 0)).any() and not mask[:, 0].any()
        assert mask[0].sum() <= 6 and mask[1].sum() <= 2 and mask[2].sum() == 0
        counts += mask[0]
    # Six draws with replacement among 8 items: each is drawn at least once with probability
    # 1 - (7/8)^6 = 0.551.
    share = counts[4:] / 3000
    assert torch.allclose(share, torch.full_like(share, 1 - (7 / 8) ** 6), atol=0.04), share


def test_a_nearly_full_row_draws_its_few_free_items_uniformly():
    positive = torch.ones(2, 10, dtype=torch.bool)
    positive[:, 0] = False
    positive[0, [3, 7]] = False  # two free items: rejection accepts 2 draws in 9 per round
    owner = torch.zeros(20000, dtype=torch.long)
    items = row_loss.draw_free_items(positive, owner, torch.Generator().manual_seed(1))
    assert set(items.tolist()) == {3, 7}
    assert abs((items == 3).float().mean() - 0.5) < 0.02


def test_input_dropout_keeps_each_non_zero_entry_with_probability_1_minus_p_scaled():
    rows = torch.zeros(4, 50)
    rows[:, 1:6] = 1.0
    rows[2, 9] = 3.0
    torch.manual_seed(0)
    draws = torch.stack([input_dropout(rows, 0.3) for _ in range(4000)])
    assert not draws[:, rows == 0].any()  # a zero stays zero
    kept = draws[:, rows != 0] != 0
    assert abs(kept.float().mean() - 0.7) < 0.01
    assert torch.allclose(draws[:, rows != 0][kept], (rows[rows != 0] / 0.7).expand_as(kept)[kept])
    torch.testing.assert_close(draws.mean(dim=0), rows, atol=0.05, rtol=0.05)
    assert torch.equal(input_dropout(rows, 0.0), rows)
    assert not input_dropout(rows, 1.0).any()


def test_nonzero_entries_from_the_histories_are_the_rows_nonzero_entries(small_data):
    cdae = build(make_config("BD", small_data, **CDAE_PAIR))[3].student
    users = torch.tensor([0, 4, 2, 4, 7])  # user 0 (padding) has no history
    history = cdae.history_item_id
    padding = int((history[4] == 0).nonzero()[0])
    history[4, padding] = history[4, 0]  # user 4 holds its first item twice
    rows = cdae.get_rating_matrix(users)
    row, item = row_loss.nonzero_entries(cdae, users, rows)
    expected = rows.nonzero(as_tuple=True)
    assert torch.equal(row, expected[0]) and torch.equal(item, expected[1])


def test_row_logits_are_recboles_cdae_forward_of_the_corrupted_rows(small_data):
    config = make_config("BD", small_data, **CDAE_PAIR)
    cdae = build(config)[3].student.train()
    users = torch.tensor([1, 5, 9])
    rows = cdae.get_rating_matrix(users)
    torch.manual_seed(3)
    got = row_logits(cdae, rows, users)
    torch.manual_seed(3)
    corrupted = input_dropout(rows, cdae.dropout.p)
    assert not torch.equal(corrupted, rows)
    cdae.eval()  # RecBole's own dropout off: it sees the corrupted rows as they are
    torch.testing.assert_close(got, cdae.forward(corrupted, users))
    torch.testing.assert_close(row_logits(cdae, rows, users), cdae.forward(rows, users))


def test_sampled_cdae_loss_is_the_bce_over_positives_and_drawn_negatives(small_data):
    config = make_config("BD", small_data, **CDAE_PAIR, cdae_negatives=3)
    _, _, _, model = build(config)
    cdae = model.student.eval()  # no dropout: the hand computation sees the same logits
    assert cdae.calculate_loss.func is sampled_row_loss
    users = torch.tensor([1, 5, 9])
    torch.manual_seed(4)
    got = cdae.calculate_loss(Interaction({cdae.USER_ID: users}))
    torch.manual_seed(4)
    rows = cdae.get_rating_matrix(users)
    mask = (rows > 0) | sampled_negatives(rows, 3)
    assert bool(((mask & (rows <= 0)).sum(dim=1) <= 3 * (rows > 0).sum(dim=1)).all())  # per user
    p = torch.sigmoid(cdae.forward(rows, users))
    bce = -(rows * torch.log(p) + (1 - rows) * torch.log(1 - p))
    expected = bce[mask].sum() + cdae.reg_weight_2 * (
        cdae.h_user.weight.norm() + cdae.h_item.weight.norm())
    assert cdae.reg_weight_1 == 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert got < cdae.__class__.calculate_loss(cdae, Interaction({cdae.USER_ID: users}))


@pytest.mark.parametrize("loss_type", ["BCE", "MSE"])
def test_own_row_loss_of_one_forward_is_recboles_cdae_loss(small_data, loss_type):
    size = {"embedding_size": 8, "corruption_ratio": 0.0, "loss_type": loss_type,
            "reg_weight_1": 0.1}
    config = make_config("RRD", small_data, **{**CDAE_PAIR, "student_config": size})
    _, _, _, model = build(config)
    users = torch.tensor([1, 5, 9])
    loss, logits = model.student_net.row_loss_and_logits(users)
    cdae = model.student
    torch.testing.assert_close(loss, cdae.calculate_loss(Interaction({cdae.USER_ID: users})))
    torch.testing.assert_close(logits, cdae.forward(cdae.get_rating_matrix(users), users))


def test_cdae_negatives_reach_every_cdae_the_runner_trains(small_data, workdir):
    result = run_recbole_kd("CDAE", config_dict={**fast("BD"), "data_path": small_data,
                                                 "embedding_size": 8, "cdae_negatives": 5})
    plain = run_recbole_kd("CDAE", config_dict={**fast("BD"), "data_path": small_data,
                                                "embedding_size": 8})
    assert result["test_result"] != plain["test_result"]
    _, _, _, model = build(make_config("BD", small_data, **CDAE_PAIR, cdae_negatives=5))
    for role in ("teacher", "student"):
        assert getattr(model, role).calculate_loss.func is sampled_row_loss
    with pytest.raises(KDConfigError, match="'cdae_negatives' = 0 is invalid"):
        make_config("BD", small_data, **CDAE_PAIR, cdae_negatives=0)
    with pytest.raises(KDConfigError, match="'student_config.cdae_negatives' = 0 is invalid"):
        make_config("BD", small_data, **{**CDAE_PAIR, "student_config": {"cdae_negatives": 0}})


def _bd_between_cdaes(small_data, **overrides):
    """BD's training loader and model between two CDAEs without dropout (deterministic rows)."""
    pair = {**CDAE_PAIR,
            "teacher_config": {**CDAE_PAIR["teacher_config"], "corruption_ratio": 0.0},
            "student_config": {**CDAE_PAIR["student_config"], "corruption_ratio": 0.0}}
    train_data, _, _, model = build(make_config("BD", small_data, **pair, **overrides))
    model.on_epoch_start(0)  # the first rank refresh
    return train_data, model


def _as_mask(pairs, shape):
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[pairs] = True
    return mask


def test_bd_between_cdaes_draws_items_per_user_as_distinct_pairs(small_data):
    train_data, model = _bd_between_cdaes(small_data, bd_items_per_positive=2)
    assert isinstance(train_data, UserDataLoader)
    users = torch.tensor([0, 3, 1, 8])  # user 0 (padding) has no training items
    degrees = torch.as_tensor(model.positives.getnnz(axis=1))[users]
    state = copy.deepcopy(model.sampler.state_dict())
    batch = model.draw(Interaction({model.USER_ID: users}))
    consumed = model.sampler.pointers.clone()
    # The same draws by hand: 2 x |I_u| consecutive ones per user and direction.
    model.sampler.load_state_dict(state)
    expected = torch.zeros((2, len(users), model.n_items), dtype=torch.bool)
    repeated = users.repeat_interleave(degrees)
    for _ in range(2):
        for direction, items in enumerate(model.sampler.next_items(repeated)):
            for user, item in zip(repeated.tolist(), items.tolist()):
                expected[direction, users.tolist().index(user), item] = True
    masks = [_as_mask(pairs, expected[0].shape) for pairs in (batch.for_student,
                                                                batch.for_teacher)]
    assert torch.equal(masks[0], expected[0]) and torch.equal(masks[1], expected[1])
    # Each marked item once: as many pairs as marks.
    assert [len(batch.for_student[0]), len(batch.for_teacher[0])] == [
        int(mask.sum()) for mask in masks]
    assert torch.equal(model.sampler.pointers, consumed)
    assert torch.equal((consumed - state["pointers"])[users], 2 * degrees)
    positives = torch.as_tensor(model.positives[users.numpy()].toarray() > 0)
    for mask in masks:
        counts = mask.sum(dim=1)
        assert counts[0] == 0 and bool((counts[1:] >= 1).all())
        assert bool((counts <= 2 * degrees).all())
        assert not bool((mask & positives).any())  # training items are never drawn


def test_bd_between_cdaes_loss_is_the_own_row_loss_plus_bce_summed_over_marked_items(
        small_data):
    _, model = _bd_between_cdaes(small_data, bd_weight_teacher=0.3, bd_weight_student=0.7,
                                 bd_tau=3.0)
    users = torch.tensor([2, 5, 9])
    batch = model.draw(Interaction({model.USER_ID: users}))
    for role, other, weight in (("teacher", "student", 0.3), ("student", "teacher", 0.7)):
        net = getattr(model, role)
        base, bd = model.losses(role, batch)
        assert base is batch.own_losses[role]  # one forward per model and batch
        with torch.no_grad():
            logits = net.forward(net.get_rating_matrix(users), users).double()
            targets = getattr(model, other).forward(
                getattr(model, other).get_rating_matrix(users), users).double()
            own = net.calculate_loss(Interaction({net.USER_ID: users}))
        mask = _as_mask(getattr(batch, f"for_{role}"), logits.shape)
        x, y = logits[mask], torch.sigmoid(targets[mask] / 3.0)
        bce = x.clamp(min=0) - x * y + torch.log1p(torch.exp(-x.abs()))
        torch.testing.assert_close(base, own)
        torch.testing.assert_close(bd.double(), weight * bce.sum(), rtol=1e-5, atol=1e-6)
        model.zero_grad()
        bd.backward()
        assert all(p.grad is None for p in getattr(model, other).parameters()), role
        assert net.h_user.weight.grad.abs().sum() > 0, role


def test_bd_between_cdaes_runs_each_users_own_loss_once_an_epoch(small_data, monkeypatch):
    config = make_config("BD", small_data, **CDAE_PAIR, train_batch_size=7)
    train_data, _, _, model = build(config)
    seen = {"teacher": [], "student": []}
    for role, users in seen.items():
        net = getattr(model, f"{role}_net")
        forward = net.row_loss_and_logits
        monkeypatch.setattr(net, "row_loss_and_logits",
                            lambda batch_users, users=users, forward=forward:
                            users.extend(batch_users.tolist()) or forward(batch_users))
    trainer_for(config, model, (train_data,))._train_epoch(train_data, 0)
    every_user = list(range(model.n_users))
    assert sorted(seen["teacher"]) == every_user and sorted(seen["student"]) == every_user
