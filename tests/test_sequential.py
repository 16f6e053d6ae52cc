"""Sequential teachers and students: queries are training rows, RecBole's sequential data flow is
unchanged, and every method distils between SASRec, GRU4Rec, BERT4Rec, Caser and NARM."""

from __future__ import annotations

import glob
import json
import subprocess
import sys

import pytest
import torch
from recbole.utils import init_logger

from recbole_kd.errors import BackboneError, CheckpointError, KDConfigError
from recbole_kd.key_checks import settings_for
from recbole_kd.model.loss import bidirectional_distillation_loss, relaxed_ranking_loss
from recbole_kd.model.sequential_backbone import QUERY_FIELD
from recbole_kd.quick_start import run_recbole_kd
from tests.conftest import FAST, METHOD_FAST, assert_same, build
from tests.test_export import STOCK_RELOAD

SIZES = {
    "SASRec": ({"hidden_size": 16, "inner_size": 32, "n_layers": 1},
               {"hidden_size": 8, "inner_size": 16, "n_layers": 1}),
    "GRU4Rec": ({"embedding_size": 16, "hidden_size": 16}, {"embedding_size": 8, "hidden_size": 8}),
    "BERT4Rec": ({"hidden_size": 16, "inner_size": 32, "n_layers": 1},
                 {"hidden_size": 8, "inner_size": 16, "n_layers": 1}),
    "Caser": ({"embedding_size": 16}, {"embedding_size": 8}),
    "NARM": ({"embedding_size": 16, "hidden_size": 16}, {"embedding_size": 8, "hidden_size": 8}),
}
# A sequential split of the small data: each user's interactions in time order, sequences of at
# most 10 items, leave-one-out by time (RecBole's sequential defaults).
SEQUENTIAL = {"MAX_ITEM_LIST_LENGTH": 10, "user_inter_num_interval": "[3,inf)",
              "load_col": {"inter": ["user_id", "item_id", "timestamp"]}}
METHODS = ["RRD", "DE", "DERRD", "BD", "RD", "CD", "DCD", "HTD"]


def sequential(model: str, small_data: str, teacher: str = "SASRec", student: str = "SASRec",
               **overrides) -> dict:
    """One-epoch settings of ``model`` between small sequential models on the small data."""
    return {**FAST, **settings_for(model, METHOD_FAST), **SEQUENTIAL, "data_path": small_data,
            "teacher_model": teacher, "teacher_config": {**SIZES[teacher][0], "epochs": 1},
            "student_model": student, "student_config": SIZES[student][1], **overrides}


def built(model: str, small_data: str, **overrides):
    from recbole_kd.config import KDConfig

    config = KDConfig(model, config_dict=sequential(model, small_data, **overrides))
    init_logger(config)
    train_data, _, _, net = build(config)
    return train_data, net


def reload_with_stock_recbole(path: str, workdir) -> dict:
    out = subprocess.run([sys.executable, "-c", STOCK_RELOAD, path], capture_output=True,
                         text=True, cwd=workdir, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("method", METHODS)
def test_every_method_distils_a_sasrec_into_a_sasrec(small_data, method):
    result = run_recbole_kd(method, config_dict=sequential(method, small_data))
    assert set(result["test_result"]) >= {"ndcg@10", "recall@10"}
    saved = torch.load(result["student_file"], weights_only=False)
    assert saved["config"]["model"] == "SASRec" and saved["config"]["hidden_size"] == 8


@pytest.mark.parametrize("method,teacher,student", [
    ("RRD", "SASRec", "GRU4Rec"), ("BD", "GRU4Rec", "GRU4Rec"), ("RD", "Caser", "Caser"),
    ("DCD", "BERT4Rec", "NARM"),
])
def test_the_exported_student_reloads_in_stock_recbole_with_the_printed_metrics(
        small_data, workdir, method, teacher, student):
    result = run_recbole_kd(method, config_dict=sequential(method, small_data, teacher, student))
    reloaded = reload_with_stock_recbole(result["student_file"], workdir)
    assert reloaded.pop("model") == student
    reloaded.pop("size")
    assert reloaded == dict(result["test_result"])


def test_queries_are_the_training_rows_numbered_from_one(small_data):
    train_data, model = built("RRD", small_data)
    rows = train_data._dataset.inter_feat
    assert torch.equal(rows[QUERY_FIELD], torch.arange(1, len(rows) + 1))
    assert model.n_queries == len(rows) + 1
    # Each query's positive is its row's target, and nothing else; query 0 is padding.
    positives = model.positives
    assert positives.shape == (len(rows) + 1, model.n_items) and positives[0].nnz == 0
    assert (positives.indices == rows[model.ITEM_ID].numpy()).all()
    assert (positives.indptr[1:] == torch.arange(len(rows) + 1).numpy()).all()  # one each
    # A user, where users are ranked, is its latest training row.
    latest = model.user_queries
    users = rows[model.USER_ID]
    assert latest[0] == 0 and len(latest) == 1 + len(users.unique())
    for query in latest[1:].tolist()[:20]:
        user = users[query - 1]
        assert query == int((users == user).nonzero().max()) + 1


def test_scores_and_own_loss_are_the_models_own_on_the_rows(small_data):
    train_data, model = built("RRD", small_data)
    model.eval()  # no dropout: the forwards compared are deterministic
    net, student = model.student_net, model.student
    batch = next(iter(train_data))
    queries = batch[QUERY_FIELD]
    items = torch.randint(1, model.n_items, (len(queries), 7))
    expected = student.full_sort_predict(batch).view(len(queries), -1).gather(1, items)
    net.new_step()
    assert torch.allclose(net.score(queries, items), expected, atol=1e-5)
    assert torch.equal(net.representations(queries, items[:, 0])[0],
                       student.forward(batch[student.ITEM_SEQ], batch[student.ITEM_SEQ_LEN]))
    net.new_step()
    own = net.base_loss(queries, batch[model.ITEM_ID], batch[model.NEG_ITEM_ID])
    assert own.item() == pytest.approx(student.calculate_loss(batch).item(), rel=1e-6)


def test_one_training_step_runs_one_forward_of_the_student(small_data, monkeypatch):
    train_data, model = built("DERRD", small_data)
    model.on_epoch_start(0)
    calls = []
    forward = type(model.student).forward
    monkeypatch.setattr(type(model.student), "forward",
                        lambda self, *a, **k: calls.append(len(a[0])) or forward(self, *a, **k))
    batch = next(iter(train_data))
    losses = model.calculate_loss(batch)
    assert len(losses) == 3 and calls == [len(batch)]


def test_the_rrd_term_on_rows_is_the_hand_computed_relaxed_ranking_loss(small_data):
    train_data, model = built("RRD", small_data, rrd_weight=0.3)
    model.on_epoch_start(0)
    model.eval()
    distiller, student = model.distillers[0], model.student
    batch = next(iter(train_data))
    query, pos, neg = model.triples(batch)
    interesting, uninteresting = distiller.sampler.for_users(query)
    # The row's own target is never drawn.
    assert not (interesting == pos.unsqueeze(1)).any()
    assert not (uninteresting == pos.unsqueeze(1)).any()
    with torch.no_grad():
        sequence = student.forward(batch[student.ITEM_SEQ], batch[student.ITEM_SEQ_LEN])
        table = student.item_embedding.weight
        hand = relaxed_ranking_loss((sequence.unsqueeze(1) * table[interesting]).sum(-1),
                                    (sequence.unsqueeze(1) * table[uninteresting]).sum(-1))
        got = distiller(query, pos, neg)
    assert got.item() == pytest.approx(0.3 * hand.sum().item() / len(query), rel=1e-5)


def test_the_bd_terms_on_rows_are_the_hand_computed_ones(small_data):
    train_data, model = built("BD", small_data, bd_weight_teacher=0.4,
                                      bd_weight_student=0.7)
    model.on_epoch_start(0)
    model.eval()
    batch = model.draw(next(iter(train_data)))
    assert not (batch.for_student == batch.pos.unsqueeze(1)).any()
    for role, other, weight in (("teacher", "student", 0.4), ("student", "teacher", 0.7)):
        items = getattr(batch, f"for_{role}")
        net, other_net = getattr(model, f"{role}_net"), getattr(model, f"{other}_net")
        with torch.no_grad():
            bd = model.losses(role, batch)[1]
            scores = net.score(batch.user, items)
            targets = other_net.score(batch.user, items)
        hand = bidirectional_distillation_loss(scores, targets, model.tau).sum() / len(batch.user)
        assert bd.item() == pytest.approx(weight * hand.item(), rel=1e-5)


@pytest.mark.parametrize("method", ["RRD", "BD"])
def test_a_sequential_run_resumes_bit_for_bit(small_data, monkeypatch, method):
    from recbole_kd.trainer.resumable import ResumableTrainer
    from tests.test_final_runs import Interrupted, saved_state

    config = {**sequential(method, small_data, epochs=3, stopping_step=100),
              **settings_for(method, {"bd_update_epochs": 2})}
    straight = run_recbole_kd(method, config_dict=config)
    (straight_point,) = glob.glob(f"saved/{method}-*-last.pth")
    save = ResumableTrainer._save_resume_point

    def save_then_stop(self, epoch, *args, **kwargs):
        save(self, epoch, *args, **kwargs)
        if epoch == 0 and type(self.model).__name__ == method:
            raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(ResumableTrainer, "_save_resume_point", save_then_stop)
        with pytest.raises(Interrupted):
            run_recbole_kd(method, config_dict=config)
    (point,) = set(glob.glob(f"saved/{method}-*-last.pth")) - {straight_point}
    resumed = run_recbole_kd(method, config_dict={**config, "kd_resume": point})
    assert resumed["test_result"] == straight["test_result"]
    assert_same(saved_state(resumed["student_file"]), saved_state(straight["student_file"]))


def test_a_general_model_with_a_sequential_one_is_refused_naming_both(small_data):
    with pytest.raises(BackboneError, match="teacher_model BPR is a general .* student_model "
                                            "SASRec is a sequential"):
        run_recbole_kd("RRD", config_dict=sequential("RRD", small_data, teacher="SASRec") | {
            "teacher_model": "BPR", "teacher_config": {"embedding_size": 16}})


def test_de_refuses_a_model_without_a_sequence_representation(small_data):
    with pytest.raises(BackboneError, match="DE needs the teacher model's sequence representation"):
        run_recbole_kd("DE", config_dict=sequential("DE", small_data, "BERT4Rec", "SASRec"))


def test_a_model_needing_features_is_refused(small_data):
    with pytest.raises(BackboneError, match="'SASRecF' needs item features"):
        run_recbole_kd("RRD", config_dict=sequential("RRD", small_data) | {
            "student_model": "SASRecF"})


def test_the_fixed_sampled_protocol_is_refused_for_sequential_runs(small_data):
    with pytest.raises(KDConfigError, match="kd_eval_protocol: fixed_sampled .* sequential"):
        run_recbole_kd("RRD", config_dict=sequential("RRD", small_data,
                                                     kd_eval_protocol="fixed_sampled"))


def test_a_distributed_sequential_run_is_refused(small_data):
    with pytest.raises(KDConfigError, match="a sequential run trains in one process"):
        run_recbole_kd("RRD", config_dict=sequential("RRD", small_data), nproc=2)


def test_a_teacher_of_another_sequence_length_is_refused(small_data):
    first = run_recbole_kd("RRD", config_dict=sequential("RRD", small_data))
    teacher = glob.glob("saved/teacher-SASRec-*.pth")
    assert len(teacher) == 1 and first
    with pytest.raises(CheckpointError, match="MAX_ITEM_LIST_LENGTH=10, this run has "
                                              "MAX_ITEM_LIST_LENGTH=5"):
        run_recbole_kd("RRD", config_dict=sequential(
            "RRD", small_data, MAX_ITEM_LIST_LENGTH=5, teacher_checkpoint=teacher[0]))
    # Trained here instead, the teacher of the other length is another cached model.
    run_recbole_kd("RRD", config_dict=sequential("RRD", small_data, MAX_ITEM_LIST_LENGTH=5))
    assert len(glob.glob("saved/teacher-SASRec-*.pth")) == 2


def test_looking_up_a_sequential_model_leaves_anomaly_detection_as_it_was():
    from recbole_kd.model.role_config import recbole_model

    assert not torch.is_anomaly_enabled()
    recbole_model("SINE", "")  # RecBole's SINE module switches it on when imported
    assert not torch.is_anomaly_enabled()


def test_encoding_many_rows_without_gradients_goes_a_batch_at_a_time(small_data, monkeypatch):
    from recbole_kd.model import sequential_backbone

    _, model = built("DE", small_data)
    model.eval()
    net = model.student_net
    queries = torch.arange(1, 101)
    with torch.no_grad():
        whole = net.encode(queries)
        monkeypatch.setattr(sequential_backbone, "NO_GRAD_ROWS", 16)
        sizes = []
        forward = type(model.student).forward
        monkeypatch.setattr(type(model.student), "forward",
                            lambda self, seq, *a: sizes.append(len(seq)) or forward(self, seq, *a))
        parts = net.encode(queries)
    assert max(sizes) == 16 and sum(sizes) == 100
    assert torch.allclose(parts, whole, atol=1e-6)
