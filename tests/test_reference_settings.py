"""The reference training setups: the files apply, ``init_std`` initialises every model alike, the
weight decay they set is the reference's, and cached models never cross splits."""

from __future__ import annotations

import math
import os

import pytest
import torch
from recbole.data.dataloader import UserDataLoader
from torch.nn import functional as F

from recbole_kd import pretrained
from recbole_kd.config import KDConfig
from recbole_kd.errors import CheckpointError, KDConfigError
from recbole_kd.model.role_config import derive_config
from recbole_kd.model.row_loss import sampled_row_loss
from recbole_kd.properties import pair_file, read_pair
from recbole_kd.quick_start import prepare_run
from tests.conftest import FAST, build, fast, make_config, trainer_for

# FAST without what the reference files set: their own values must reach the models.
FILE_KEYS = ("teacher_config", "student_config", "train_batch_size")


def reference_config(model: str, small_data: str, name: str, **overrides) -> KDConfig:
    settings = {k: v for k, v in fast(model).items() if k not in FILE_KEYS}
    return KDConfig(model, config_file_list=[pair_file(name)],
                    config_dict={**settings, "data_path": small_data, **overrides})


def test_derrd_reference_reaches_teacher_and_student(small_data):
    config = reference_config("DERRD", small_data, "derrd-citeulike")
    assert config["epochs"] == 1  # the test's own setting stays above the file's
    _, _, _, model = build(config)
    for role, size in (("teacher", 200), ("student", 20)):
        derived = getattr(model, f"{role}_config")
        assert derived["embedding_size"] == size
        assert derived["train_batch_size"] == 1024
        assert derived["learning_rate"] == 0.001
        assert derived["weight_decay"] == pytest.approx(1e-3 / 1024)
        assert derived["init_std"] == 0.01
        assert getattr(model, role).item_embedding.weight.shape[1] == size
    assert model.student_config["stopping_step"] == 20
    # The distilled student starts from N(0, 0.01), not from xavier_normal.
    assert model.student.item_embedding.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_bd_reference_warm_ups_and_stage_two(small_data):
    config = reference_config("BD", small_data, "bd-citeulike", epochs=100)
    for role, size in (("teacher", 50), ("student", 5)):
        derived = derive_config(config, "BPR", config[f"{role}_config"], role)
        assert derived["embedding_size"] == size
        assert derived["train_batch_size"] == 128
        assert derived["learning_rate"] == 0.001
        assert derived["epochs"] == 1000  # warm-ups: up to 1,000 epochs, early stopped
        assert derived["init_std"] is None  # RecBole's own initialisation
    assert config["epochs"] == 100 and config["stopping_step"] == 20  # stage 2
    protocol = read_pair("bd")
    assert protocol["topk"] == [50, 100, 200] and protocol["kd_eval_protocol"] == "full"


def test_bd_cdae_reference_builds_the_notebooks_cdaes_and_stage_two(small_data):
    stored = read_pair("bd-cdae-citeulike")
    assert stored["teacher_config"]["epochs"] == stored["student_config"]["epochs"] == 1000
    # Warm-ups of 2 epochs here, to keep the test short; the rest is the file's.
    config = reference_config("BD", small_data, "bd-cdae-citeulike", epochs=100,
                              teacher_config={"embedding_size": 50, "epochs": 2},
                              student_config={"embedding_size": 5, "epochs": 2})
    train_data, _, _, model = build(config)
    assert isinstance(train_data, UserDataLoader) and train_data.step == 128  # users
    for role, size in (("teacher", 50), ("student", 5)):
        derived = getattr(model, f"{role}_config")
        cdae = getattr(model, role)
        assert cdae.h_item.out_features == size
        assert isinstance(cdae.h_act, torch.nn.Sigmoid)
        assert cdae.calculate_loss.func is sampled_row_loss
        assert cdae.cdae_negatives == 5
        assert cdae.reg_weight_1 == cdae.reg_weight_2 == 0
        assert derived["learning_rate"] == 0.002 and derived["weight_decay"] == 0.001  # warm-up
        assert derived["init_layers"] == "torch"
        assert cdae.h_user.weight.std().item() == pytest.approx(1.0, rel=0.1)  # N(0, 1)
    optimizers = trainer_for(config, model).optimizers
    for role in ("teacher", "student"):  # stage 2: no weight decay, the warm-ups' rate
        (group,) = optimizers[role].param_groups
        assert group["weight_decay"] == 0 and group["lr"] == 0.002
    assert (config["bd_tau"], config["bd_items_per_positive"]) == (2, 5)
    assert (config["eval_step"], config["stopping_step"]) == (5, 20)  # patience: 100 epochs
    assert config["bd_eps_teacher"] == config["bd_eps_student"] == 1e-4


def xavier_std(table: torch.Tensor) -> float:
    return math.sqrt(2.0 / sum(table.shape))


def test_init_std_sets_the_embeddings_distribution(small_data):
    *_, own = build(make_config("BPR", small_data, embedding_size=64))
    *_, drawn = build(make_config("BPR", small_data, embedding_size=64, init_std=0.01))
    for name in ("user_embedding", "item_embedding"):
        own_table = getattr(own, name).weight.detach()
        drawn_table = getattr(drawn, name).weight.detach()
        assert own_table.std().item() == pytest.approx(xavier_std(own_table), rel=0.03)
        assert drawn_table.std().item() == pytest.approx(0.01, rel=0.03)
        assert abs(drawn_table.mean().item()) < 1e-3


@pytest.mark.parametrize("value", [0, -0.01, "small", True])
def test_init_std_refuses_impossible_values(small_data, value):
    with pytest.raises(KDConfigError, match="init_std"):
        make_config("BPR", small_data, init_std=value)
    with pytest.raises(KDConfigError, match="init_std"):  # inside a role's overrides too
        build(make_config("RRD", small_data, student_config={"embedding_size": 8,
                                                             "init_std": value}))


def test_init_layers_torch_gives_pytorchs_own_initialisation(small_data):
    """A CDAE's user table, encoder and decoder from PyTorch's defaults (N(0, 1) embeddings,
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) Linear weights and biases), not RecBole's xavier_normal."""
    settings = {"embedding_size": 8, "train_neg_sample_args": None}
    *_, own = build(make_config("CDAE", small_data, **settings))
    *_, reset = build(make_config("CDAE", small_data, init_layers="torch", **settings))
    own_users, reset_users = own.h_user.weight.detach(), reset.h_user.weight.detach()
    assert own_users.std().item() == pytest.approx(xavier_std(own_users), rel=0.05)
    assert reset_users.std().item() == pytest.approx(1.0, rel=0.05)
    for name in ("h_item", "out_layer"):
        own_layer, layer = getattr(own, name), getattr(reset, name)
        assert torch.count_nonzero(own_layer.bias) == 0  # RecBole zeroes them
        bound = 1 / math.sqrt(layer.in_features)
        weight, bias = layer.weight.detach(), layer.bias.detach()
        assert weight.abs().max().item() <= bound and bias.abs().max().item() <= bound
        assert torch.count_nonzero(bias) == bias.numel()
        # uniform on [-bound, bound]: std bound / sqrt(3)
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)


def test_init_layers_reaches_both_roles_and_names_its_own_cached_teacher(small_data):
    *_, plain = build(make_config("RRD", small_data))  # caches a teacher from xavier_normal
    *_, reset = build(make_config("RRD", small_data, init_layers="torch"))
    for role in ("teacher", "student"):
        plain_table = getattr(plain, role).item_embedding.weight.detach()
        reset_table = getattr(reset, role).item_embedding.weight.detach()
        assert plain_table.std().item() < 0.5  # xavier_normal: about sqrt(2 / (rows + dim))
        assert reset_table.std().item() == pytest.approx(1.0, rel=0.1)  # N(0, 1), barely trained


@pytest.mark.parametrize("value", ["xavier", True, 1])
def test_init_layers_refuses_other_values(small_data, value):
    with pytest.raises(KDConfigError, match="init_layers"):
        make_config("BPR", small_data, init_layers=value)


def initial_weights(monkeypatch) -> list[dict]:
    """Record the weights of every model that pretrained.py builds, right after initialisation."""
    seen = []
    real = pretrained.initialise

    def spy(model, config):
        real(model, config)
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(pretrained, "initialise", spy)
    return seen


def test_same_initialisation_alone_distilled_and_in_bd(small_data, monkeypatch):
    """The student alone (a plain run and BD's warm-up), the distilled student and the teacher
    alone start from the same weights when given the same settings."""
    reference = {"init_std": 0.01}
    student = {"embedding_size": FAST["student_config"]["embedding_size"], **reference}
    teacher = {"embedding_size": FAST["teacher_config"]["embedding_size"], **reference}
    *_, alone = build(make_config("BPR", small_data, **student))
    *_, teacher_alone = build(make_config("BPR", small_data, **teacher))
    trained_alone = initial_weights(monkeypatch)
    *_, distilled = build(make_config("RRD", small_data, **reference))  # trains the teacher
    build(make_config("BD", small_data, **reference))  # the same cached teacher; the student
    teacher_warm_up, student_warm_up = trained_alone
    for key, value in alone.state_dict().items():
        assert torch.equal(distilled.student.state_dict()[key], value), key
        assert torch.equal(student_warm_up[key], value), key
    for key, value in teacher_alone.state_dict().items():
        assert torch.equal(teacher_warm_up[key], value), key
    assert alone.item_embedding.weight.std().item() == pytest.approx(0.01, rel=0.05)


def bpr_steps(summed: bool, weight_decay: float, eps: float, steps: int = 3) -> list[torch.Tensor]:
    """A small BPR's two tables after ``steps`` Adam steps on one fixed batch that holds every
    user and item, the loss summed or averaged over the batch's 100 triples."""
    generator = torch.Generator().manual_seed(0)
    users = torch.nn.Parameter(torch.randn(30, 8, generator=generator, dtype=torch.float64) * 0.1)
    items = torch.nn.Parameter(torch.randn(50, 8, generator=generator, dtype=torch.float64) * 0.1)
    u = torch.arange(100) % 30
    pos = torch.arange(100) % 50
    neg = torch.randperm(100, generator=generator) % 50
    optimizer = torch.optim.Adam([users, items], lr=1e-3, weight_decay=weight_decay, eps=eps)
    for _ in range(steps):
        optimizer.zero_grad()
        diff = (users[u] * items[pos]).sum(-1) - (users[u] * items[neg]).sum(-1)
        losses = -F.logsigmoid(diff)
        (losses.sum() if summed else losses.mean()).backward()
        optimizer.step()
    return [users.detach(), items.detach()]


BATCH = 100  # triples in bpr_steps' batch


@pytest.mark.parametrize("eps", [0.0, 1e-8])
def test_weight_decay_on_a_mean_loss_is_the_reference_on_a_sum(eps):
    """Adam on sum-loss + wd * theta takes the steps of Adam on mean-loss + (wd / B) * theta: the
    gradients differ by the factor B, which Adam's update cancels, eps included once it is
    divided by B too."""
    start = bpr_steps(True, 0.0, eps, steps=0)
    reference = bpr_steps(True, 1e-3, eps)
    mean = bpr_steps(False, 1e-3 / BATCH, eps / BATCH)
    for ref, got, initial in zip(reference, mean, start):
        assert (ref - initial).abs().max().item() > 2e-3  # three steps of lr 1e-3 moved them
        assert torch.allclose(got, ref, rtol=0, atol=1e-12)


def test_weight_decay_with_recboles_fixed_eps():
    """RecBole's Adam keeps eps = 1e-8 on the mean loss (as eps * B would act on the sum): the
    steps then differ only where a weight's gradient is near 1e-8, by under 1 % of a step here,
    several times less than what the weight decay itself changes."""
    start = bpr_steps(True, 0.0, 1e-8, steps=0)
    reference = bpr_steps(True, 1e-3, 1e-8)
    mean = bpr_steps(False, 1e-3 / BATCH, 1e-8)
    no_decay = bpr_steps(False, 0.0, 1e-8)
    for ref, got, plain, initial in zip(reference, mean, no_decay, start):
        moved = (ref - initial).abs().max().item()
        off = (got - ref).abs().max().item()
        assert off < 0.01 * moved
        assert (plain - ref).abs().max().item() > 5 * off


def test_cache_and_checkpoints_follow_the_split_contents(small_data, tmp_path):
    """Two data folders with one data set name but other interactions: each gets its own cached
    teacher, and one's teacher is refused as the other's teacher_checkpoint."""
    other = tmp_path / "other-data"
    os.makedirs(other / "ml-small")
    with open(os.path.join(small_data, "ml-small", "ml-small.inter"), encoding="utf-8") as f:
        lines = f.readlines()
    with open(other / "ml-small" / "ml-small.inter", "w", encoding="utf-8") as f:
        f.writelines(lines[:-2000])  # the same users and items, fewer interactions
    first = prepare_run(make_config("RRD", small_data)).pretrained["teacher"].path
    second = prepare_run(make_config("RRD", str(other))).pretrained["teacher"].path
    assert first != second and os.path.isfile(first) and os.path.isfile(second)
    with pytest.raises(CheckpointError, match="other interactions"):
        prepare_run(make_config("RRD", str(other), teacher_checkpoint=first))
