"""Distributed runs: two (and three) gloo processes on CPU, on the small slice of ml-100k."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import torch
from conftest import FAST, REPOSITORY, assert_same, fast
from distributed_helpers import (
    bd_gradients,
    evaluate_weights,
    free_port,
    gradients_of_rank_share,
    run_killed_after_epoch,
    term_gradients,
    train_and_gather_weights,
    train_shard_contents,
)
from recbole.quick_start import load_data_and_model
from recbole.utils import init_seed
from test_resume import SETTINGS as RESUME_SETTINGS
from test_resume import checkpoint_state

from recbole_kd import distributed
from recbole_kd.config import KDConfig
from recbole_kd.errors import CheckpointError, TrainingError
from recbole_kd.key_checks import settings_for
from recbole_kd.model import layers
from recbole_kd.quick_start import prepare_run, run_recbole_kd
from recbole_kd.sharding import balanced_blocks, chunk_blocks, interactions_per_user

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="this PyTorch has no torch.distributed")


def settings(model: str, small_data: str, **more) -> dict:
    # Chunks of 32 users: ml-small's ~400 users make 13, enough for 3 ranks.
    return {**fast(model), "data_path": small_data, "epochs": 2, "kd_chunk_size": 32, **more}


@pytest.mark.parametrize("model,pair", [
    *((model, {}) for model in ("DE", "RRD", "DERRD", "BD")),
    ("BD", {"teacher_model": "CDAE", "student_model": "CDAE"}),  # batches of users
], ids=["DE", "RRD", "DERRD", "BD", "BD-CDAE"])
def test_two_processes_write_one_run_whose_exports_load_in_stock_recbole(model, pair,
                                                                          small_data):
    result = run_recbole_kd(model, "ml-small", config_dict=settings(model, small_data, **pair),
                            nproc=2, port=free_port())
    run = os.path.splitext(os.path.basename(result["saved_model_file"]))[0]
    exports = ["student", "teacher"] if model == "BD" else ["student"]
    written = sorted(os.path.basename(p) for p in glob.glob(f"saved/{model}-*"))
    # Beside rank 0's resume point, each rank's sampler state of the last epoch (1) alone.
    assert written == sorted([f"{run}.pth", f"{run}-last.pth",
                              *(f"{run}-last.rank{rank}.epoch1.pth" for rank in (0, 1)),
                              *(f"{run}-{role}.pth" for role in exports)])
    assert not glob.glob("saved/*.tmp") and not glob.glob("saved/*.partial")
    for role in exports:  # a plain process, no process group: stock RecBole alone
        config, net, _, _, _, test_data = load_data_and_model(result[f"{role}_file"])
        assert config["single_spec"] and "world_size" not in config.final_config_dict
        assert config["device"] == torch.device("cpu")
        assert isinstance(net, torch.nn.Module) and len(test_data) > 0


@pytest.mark.parametrize("model", ["DERRD", "BD"])
def test_every_rank_ends_with_the_same_weights_and_a_rerun_with_them(model, small_data):
    runs = [distributed.spawn(train_and_gather_weights, 2, -1, "localhost", free_port(), 0,
                              settings(model, small_data), args=(model, "ml-small", None))
            for _ in range(2)]
    for by_rank in runs:
        assert len(by_rank) == 2 and by_rank[0] == by_rank[1]
        assert any("student" in name for name in by_rank[0])
        # DERRD's frozen teacher is dropped once prepared, DDP holding no reference to it;
        # BD trains its teacher.
        assert by_rank[0]["teacher_freed"] == (model == "DERRD")
    assert runs[0] == runs[1]  # the same world size and seed: the same weights


# The DE-RRD protocol: each held-out item among fixed negatives, which ranks keep for their users.
FIXED_SAMPLED = {"eval_args": {"split": {"LS": "valid_and_test"}, "order": "RO",
                               "group_by": "user", "mode": "full"},
                 "user_inter_num_interval": "[3,inf)", "kd_eval_protocol": "fixed_sampled",
                 "kd_eval_negatives": 99}


@pytest.mark.parametrize("protocol", [{}, FIXED_SAMPLED], ids=["full", "fixed_sampled"])
def test_metrics_over_one_two_and_three_ranks_agree(small_data, protocol):
    config_dict = {**FAST, "data_path": small_data, "embedding_size": 16, "kd_chunk_size": 32,
                   "metric_decimal_place": 12, "topk": [5, 10, 20],
                   "metrics": ["Recall", "MRR", "NDCG", "Hit", "Precision", "MAP"], **protocol}
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


def user_disjoint_batch(train_dataset, size: int) -> dict:
    """A batch of ``size`` interactions whose halves hold users of the two ranks' blocks
    (chunks of 32 users), negatives drawn at random: (user, pos, neg) and each half's
    positions."""
    users = train_dataset.inter_feat[train_dataset.uid_field]
    items = train_dataset.inter_feat[train_dataset.iid_field]
    order = torch.argsort(users, stable=True)
    users, items = users[order], items[order]
    blocks = chunk_blocks(interactions_per_user(train_dataset), 32, 2)
    half = size // 2
    starts = torch.searchsorted(users, torch.tensor([block.start for block in blocks]))
    picked = torch.cat([torch.arange(start, start + half) for start in starts.tolist()])
    generator = torch.Generator().manual_seed(0)
    neg = torch.randint(1, train_dataset.item_num, (size,), generator=generator)
    return {"user": users[picked], "pos": items[picked], "neg": neg,
            "shares": [torch.arange(half), torch.arange(half, size)]}


@pytest.mark.parametrize("model", ["RRD", "DE", "BD"])
def test_a_step_over_two_ranks_has_the_gradient_of_the_whole_batch(small_data, monkeypatch,
                                                                    model):
    """One step on a batch whose ranks' shares hold different users: the gradient shared by DDP
    equals one process's gradient of the whole batch, for every term (the base loss, RRD, DE
    with its items counted once over ranks, each BD model's loss). DE's Gumbel noise, drawn
    from each rank's own stream, is left out on both sides."""
    config_dict = {**settings(model, small_data), "epochs": 1}
    config = KDConfig(model, "ml-small", config_dict=config_dict)
    run = prepare_run(config)
    batch = user_disjoint_batch(run.train_data._dataset, 512)
    assert not set(batch["user"][:256].tolist()) & set(batch["user"][256:].tolist())
    assert set(batch["pos"][:256].tolist()) & set(batch["pos"][256:].tolist())  # shared items
    torch.save(batch, "batch.pt")
    monkeypatch.setattr(layers, "gumbel_softmax", lambda alpha, tau, generator=None: alpha)
    run.model.on_epoch_start(0)
    if model == "BD":
        whole = bd_gradients(run.model, batch)
    else:
        whole = term_gradients(run.model, config, batch)
    shared = distributed.spawn(
        partial(gradients_of_rank_share, batch_file="batch.pt", noise=False), 2, -1,
        "localhost", free_port(), 0, config_dict, args=(model, "ml-small", None))
    assert len(shared) == len(whole) == 2  # base + term, or BD's teacher and student
    for term, (got, expected) in enumerate(zip(shared, whole)):
        assert expected and got.keys() >= expected.keys(), term
        # Every trainable parameter takes part in a shared step, with a zero gradient where the
        # term does not reach it (DE's experts in the base loss).
        assert all(not got[name].any() for name in got.keys() - expected.keys()), term
        for name in expected:
            assert expected[name].abs().sum() > 0, (term, name)
            # float32 sums in another order: entries near zero differ by rounding of the largest
            scale = float(expected[name].abs().max())
            torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6 * scale,
                                       msg=f"term {term}, {name}")


def test_torchrun_launches_the_command_line(small_data, workdir):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               f"--master_port={free_port()}", os.path.join(REPOSITORY, "run_recbole_kd.py"),
               "-m", "RRD", "-d", "ml-small", f"--data_path={small_data}", "--epochs=1",
               "--state=ERROR", "--show_progress=False", "--teacher_config={'embedding_size': 16}",
               "--rrd_top_n=50", "--rrd_interesting=5", "--rrd_uninteresting=5",
               "--kd_chunk_size=32"]
    env = {**os.environ, "PYTHONPATH": REPOSITORY, "OMP_NUM_THREADS": "1"}
    process = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True,
                             check=False, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    names = sorted(os.path.basename(p) for p in glob.glob("saved/RRD-*"))
    assert len(names) == 5 and [n for n in names if n.endswith("-student.pth")], names
    assert len([n for n in names if ".rank" in n]) == 2, names  # each rank's sampler state


def test_balanced_blocks_cut_users_into_contiguous_blocks_of_equal_interactions():
    blocks = balanced_blocks(np.array([5, 1, 1, 1, 1, 1, 5, 5]), 2)
    assert [b.tolist() for b in blocks] == [[0, 1, 2, 3, 4, 5], [6, 7]]
    blocks = balanced_blocks(np.ones(10, dtype=int), 3)
    assert [len(b) for b in blocks] == [4, 3, 3]
    assert np.concatenate(blocks).tolist() == list(range(10))


@pytest.mark.parametrize("ranks", [2, 3])
def test_each_rank_trains_on_its_own_users_in_equal_steps(small_data, ranks):
    config_dict = {**settings("RRD", small_data), "train_batch_size": 512}
    shards = distributed.spawn(train_shard_contents, ranks, -1, "localhost", free_port(), 0,
                               config_dict, args=("RRD", "ml-small", None))
    config = KDConfig("RRD", "ml-small", config_dict=config_dict)
    interactions = len(prepare_run(config).train_data._dataset)
    assert sum(len(s["positions"]) for s in shards) == interactions
    assert len(set().union(*(s["users"] for s in shards))) == sum(len(s["users"]) for s in shards)
    assert len({len(s["rows"]) for s in shards}) == 1  # the same steps on every rank
    assert all(set(s["rows"].tolist()) == set(s["positions"].tolist()) for s in shards)
    # Blocks of whole chunks, balanced by interactions: within one chunk of an equal share.
    per_user = interactions_per_user(prepare_run(config).train_data._dataset)
    largest_chunk = max(np.add.reduceat(per_user, np.arange(0, len(per_user), 32)))
    assert all(len(s["positions"]) <= interactions / ranks + largest_chunk for s in shards)
    assert shards[0]["batches"][0] == 512 // ranks
    assert len({tuple(s["batches"]) for s in shards}) == 1


def test_a_rank_waiting_for_other_machines_says_so_and_times_out(monkeypatch, capsys):
    """--nproc 1 --world_size 2: rank 0 says what it waits for, and the group's timeout is
    kd_dist_timeout's for gloo and NCCL alike."""
    from recbole_kd import distributed

    asked = {}

    class Stop(Exception):
        pass

    def init_process_group(**kwargs):
        asked.update(kwargs)
        raise Stop

    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", init_process_group)
    config = {"local_rank": 0, "world_size": 2, "nproc": 1, "offset": 0, "ip": "localhost",
              "port": "5999", "use_gpu": False, "kd_dist_timeout": 3}
    with pytest.raises(Stop):
        distributed.init_process(config)
    assert asked["timeout"].total_seconds() == 180 and asked["world_size"] == 2
    assert "Waiting for 1 more rank(s) at localhost:5999" in capsys.readouterr().err
