"""RD, CD, DCD and HTD: training, frozen teacher, checkpointed draws, quirk switches, keys."""

from __future__ import annotations

import math

import pytest
import torch
from recbole.utils import init_logger

from recbole_kd.errors import KDConfigError
from recbole_kd.key_checks import KEY_RULES
from recbole_kd.model.competitor_loss import cosine_matrix
from recbole_kd.model.sampler.relaxed_ranking import teacher_top_n
from tests.conftest import build, make_config, trainer_for

# Small lists for the ~1,300-item slice (its busiest user has ~700 positives, its most
# popular item ~170 users).
SMALL = {
    "RD": {"rd_top_k": 5, "rd_dynamic_samples": 20},
    "CD": {"cd_top_n": 100, "cd_samples": 3},
    "DCD": {"dcd_top_n": 30, "dcd_samples": 5},
    "HTD": {"htd_num_groups": 4},
}


def build_model(name: str, small_data: str, **overrides):
    config = make_config(name, small_data, **{**SMALL[name], **overrides})
    init_logger(config)
    train_data, valid_data, _, model = build(config)
    return config, train_data, valid_data, model


@pytest.mark.parametrize("name", ["RD", "CD", "DCD", "HTD"])
def test_trains_one_epoch(small_data, name):
    extra = {"rd_dynamic_start_epoch": 0} if name == "RD" else {}
    config, train_data, valid_data, model = build_model(name, small_data, **extra)
    teacher = model.teacher  # kept here: RD, DCD and HTD release it once prepared
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in model.student.state_dict().items()}
    trainer = trainer_for(config, model)
    model.on_epoch_start(0)
    losses = model.calculate_loss(next(iter(train_data)).to(config["device"]))
    assert len(losses) == 1 + len(model.distillers)
    assert all(math.isfinite(loss.item()) for loss in losses)
    assert all(loss.item() > 0 for loss in losses[1:])
    trainer.fit(train_data, valid_data, saved=False)
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    assert any(not torch.equal(v, student_before[k]) for k, v in model.student.state_dict().items())


def first_batch(config, train_data):
    batch = next(iter(train_data)).to(config["device"])
    return (
        batch[config["USER_ID_FIELD"]],
        batch[config["ITEM_ID_FIELD"]],
        batch[config["NEG_PREFIX"] + config["ITEM_ID_FIELD"]],
    )


def rewound(distiller, call, switch):
    """``call()`` run twice from the same generator state, ``switch()`` in between."""
    state = distiller.generator.get_state()
    first = call()
    distiller.generator.set_state(state)
    switch()
    return first, call()


# ---------------------------------------------------------------- gradients and checkpoints


@pytest.mark.parametrize("name", ["RD", "CD", "DCD", "HTD"])
def test_distillation_gradients_reach_only_the_student(small_data, name):
    extra = {"rd_dynamic_start_epoch": 0} if name == "RD" else {}
    config, train_data, _, model = build_model(name, small_data, **extra)
    teacher = model.teacher  # kept here: RD, DCD and HTD release it once prepared
    model.on_epoch_start(0)
    user, pos, neg = first_batch(config, train_data)
    sum(distiller(user, pos, neg) for distiller in model.distillers).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.student.parameters())


@pytest.mark.parametrize(
    "name,overrides,state_matters",
    [
        ("RD", {"rd_dynamic_start_epoch": 0}, True),
        ("RD", {"rd_dynamic_start_epoch": 0, "rd_dynamic_per": "user"}, True),
        ("CD", {}, True),
        # Drawn once from the seed: a fresh generator draws the same items again.
        ("CD", {"cd_guide": "random"}, False),
        ("DCD", {}, True),
    ],
)
def test_draws_resume_from_a_state_dict(small_data, name, overrides, state_matters):
    config, train_data, _, model = build_model(name, small_data, **overrides)
    user, pos, neg = first_batch(config, train_data)
    model.on_epoch_start(0)
    model.calculate_loss(next(iter(train_data)).to(config["device"]))  # advances the draws
    state = model.state_dict()
    _, _, _, fresh = build_model(name, small_data, **overrides)
    fresh.load_state_dict(state)
    # The same weights without the distillers' draw state: draws from the seed again.
    _, _, _, unloaded = build_model(name, small_data, **overrides)
    unloaded.load_state_dict(
        {k: v for k, v in state.items() if not k.endswith("_extra_state")}, strict=False
    )
    for m in (model, fresh, unloaded):
        m.on_epoch_start(1)
    expected = [d(user, pos, neg) for d in model.distillers]
    assert [d(user, pos, neg) for d in fresh.distillers] == expected
    if state_matters:
        assert [d(user, pos, neg) for d in unloaded.distillers] != expected


# ---------------------------------------------------------------- RD switches


def rd_hybrid(small_data, **overrides):
    config, train_data, _, model = build_model(
        "RD", small_data, rd_dynamic_start_epoch=0, **overrides
    )
    model.on_epoch_start(0)
    user, _, _ = first_batch(config, train_data)
    distiller = model.distillers[0]
    with torch.no_grad():
        top_scores = distiller.student_net.score(user, distiller.top[user])
    return model, distiller, user, top_scores


def test_rd_keys_reach_the_distiller(small_data):
    _, _, _, model = build_model(
        "RD",
        small_data,
        rd_weight_renormalize=True,
        rd_rank_offset=True,
        rd_dynamic_per="user",
        rd_dynamic_start_epoch=3,
    )
    d = model.distillers[0]
    assert (d.renormalize, d.rank_offset, d.dynamic_per) == (True, True, "user")
    model.on_epoch_start(2)
    assert not d.hybrid and d.dynamic is None  # epochs 0..E0-1: position weights only
    model.on_epoch_start(3)
    assert d.hybrid and d.dynamic.shape == (model.n_users, SMALL["RD"]["rd_dynamic_samples"])


def test_rd_warm_up_uses_the_position_weights_alone(small_data):
    model, d, user, top_scores = rd_hybrid(small_data)
    model.on_epoch_start(0)
    d.hybrid = False  # as for an epoch before rd_dynamic_start_epoch
    weights = d.row_weights(user, top_scores)
    assert torch.equal(weights, d.position_weights.expand_as(weights))


def test_rd_weight_renormalize_rescales_each_hybrid_row(small_data):
    _, d, user, top_scores = rd_hybrid(small_data)
    raw, normalized = rewound(
        d, lambda: d.row_weights(user, top_scores), lambda: setattr(d, "renormalize", True)
    )
    assert (raw.sum(dim=1) < 1 - 1e-6).any()  # the authors' weights are not normalised
    nonzero = raw.sum(dim=1) > 0
    torch.testing.assert_close(normalized[nonzero], raw[nonzero] / raw[nonzero].sum(1, True))
    torch.testing.assert_close(normalized[nonzero].sum(1), torch.ones(int(nonzero.sum())))


def test_rd_rank_offset_gives_unbeaten_items_weight_tanh_mu(small_data):
    _, d, user, top_scores = rd_hybrid(small_data)
    authors, kds = rewound(
        d, lambda: d.row_weights(user, top_scores), lambda: setattr(d, "rank_offset", True)
    )
    unbeaten = authors[:, 0] == 0
    assert unbeaten.any() and (kds[:, 0] > 0).all()
    expected = d.position_weights[0] * math.tanh(d.mu)
    torch.testing.assert_close(kds[unbeaten, 0], expected.expand(int(unbeaten.sum())))


def test_rd_dynamic_per_row_redraws_per_call_and_per_user_per_epoch(small_data):
    model, d, user, top_scores = rd_hybrid(small_data, rd_dynamic_samples=3)
    assert not torch.equal(d.row_weights(user, top_scores), d.row_weights(user, top_scores))
    d.dynamic_per = "user"
    model.on_epoch_start(1)
    first = d.dynamic.clone()
    assert torch.equal(d.row_weights(user, top_scores), d.row_weights(user, top_scores))
    model.on_epoch_start(2)
    assert not torch.equal(first, d.dynamic)
    positives = torch.from_numpy(model.positives.toarray() != 0)
    assert not positives.gather(1, d.dynamic).any() and (d.dynamic > 0).all()


# ---------------------------------------------------------------- CD switches


def cd_model(small_data, **overrides):
    _, _, _, model = build_model("CD", small_data, **overrides)
    model.on_epoch_start(0)
    return model, model.distillers[0]


def top_lists(net, model, n):
    return teacher_top_n(net.all_item_scores, model.positives, n, 1024, "cpu")


@pytest.mark.parametrize("guide", ["teacher", "student"])
def test_cd_guided_items_come_from_the_guides_list(small_data, guide):
    model, d = cd_model(small_data, cd_guide=guide)
    net = model.teacher_net if guide == "teacher" else model.student_net
    top = top_lists(net, model, d.list_len)
    assert (top[:, None, :] == d.samples[:, :, None]).any(-1).all()
    first = d.samples.clone()
    model.on_epoch_start(1)
    # KDs: only the student-guided draw is renewed every epoch.
    assert torch.equal(first, d.samples) == (guide == "teacher")
    d.redraw = not d.redraw  # as cd_redraw_each_epoch does
    second = d.samples.clone()
    model.on_epoch_start(2)
    assert torch.equal(second, d.samples) == (guide == "student")


def test_cd_redraw_each_epoch_key(small_data):
    _, d = cd_model(small_data, cd_guide="teacher", cd_redraw_each_epoch=True)
    assert d.redraw
    _, d = cd_model(small_data, cd_guide="student", cd_redraw_each_epoch=False)
    assert not d.redraw


def test_cd_random_guide_is_uniform_over_all_items(small_data):
    model, d = cd_model(small_data, cd_guide="random", cd_samples=50)
    positives = torch.from_numpy(model.positives.toarray() != 0)
    assert positives.gather(1, d.samples).any()  # positives are not excluded
    assert (d.samples >= 1).all() and (d.samples < model.n_items).all()
    assert torch.equal(
        d.teacher_scores[5], model.teacher_net.score(torch.tensor([5]), d.samples[5:6])[0]
    )


# ---------------------------------------------------------------- DCD switches


def test_dcd_rrd_weight_adds_the_rrd_term(small_data):
    _, _, _, model = build_model("DCD", small_data)
    assert model.loss_names[1:] == ["ucd_loss", "icd_loss"]
    _, _, _, model = build_model("DCD", small_data, dcd_rrd_weight=0.5)
    assert model.loss_names[1:] == ["ucd_loss", "icd_loss", "rrd_loss"]
    assert model.distillers[2].weight == 0.5


@pytest.mark.parametrize("floor", [0.0, 1e-5])
def test_dcd_weight_floor_guards_rows_the_student_already_orders(small_data, floor):
    config, train_data, _, model = build_model("DCD", small_data, dcd_weight_floor=floor)
    user, pos, neg = first_batch(config, train_data)
    model.on_epoch_start(0)
    d = model.distillers[0]
    # A student that orders every list exactly as the teacher: every e+ and e- is zero.
    n = d.lists.shape[1]
    d.student_list_scores = lambda anchors: (
        -torch.arange(n, dtype=torch.float).expand(len(anchors), n)
    )
    d.refresh()
    if floor == 0:
        assert d.under.max() == 0
        with pytest.raises(RuntimeError):
            d(user, pos, neg)
    else:
        assert (d.under == floor).all() and (d.over == floor).all()
        assert math.isfinite(d(user, pos, neg).item())


def test_dcd_draws_keep_the_teacher_order_and_refresh_every_period(small_data):
    _, _, _, model = build_model("DCD", small_data, dcd_refresh_epochs=2)
    model.on_epoch_start(0)
    for d in model.distillers:
        anchors = torch.arange(1, 30)
        above, _ = d.draw(anchors)
        hits = d.lists[anchors][:, None, :] == above[:, :, None]
        assert (hits.int().argmax(-1).diff(dim=1) > 0).all()
        under = d.under
        with torch.no_grad():
            for p in model.student.parameters():
                p.add_(torch.randn_like(p))
        model.on_epoch_start(1)
        assert d.under is under
        model.on_epoch_start(2)
        assert not torch.equal(d.under, under)


def test_user_list_scores_score_each_user_for_its_rows_item(small_data):
    _, _, _, model = build_model("DCD", small_data)
    users = torch.tensor([[1, 2, 3], [4, 5, 1]])
    items = torch.tensor([7, 9])
    got = model.student_net.user_list_scores(users, items)
    for row in range(2):
        for col in range(3):
            one = model.student_net.score(users[row, col : col + 1], items[row : row + 1, None])
            torch.testing.assert_close(got[row, col], one[0, 0])


# ---------------------------------------------------------------- HTD switches


def htd_distiller(small_data, **overrides):
    _, _, _, model = build_model("HTD", small_data, **overrides)
    model.on_epoch_start(0)
    d = model.distillers[0]
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(40, 8, generator=gen, requires_grad=True)
    teacher = torch.randn(40, 32, generator=gen)
    groups = torch.randint(0, 3, (40,), generator=gen)
    return d, student, teacher, groups


def group_level_gradient(d, student, teacher, groups):
    student.grad = None
    loss = d.group_level_loss(student, teacher, groups)
    if not loss.requires_grad:
        return None
    loss.backward()
    return student.grad


def test_htd_group_level_and_prototype_grad(small_data):
    d, student, teacher, groups = htd_distiller(small_data, htd_group_level="pp")
    assert (d.group_level, d.prototype_grad) == ("pp", False)
    # Group(P, P) with gradient-free prototypes trains nothing, as in the reference.
    grad = group_level_gradient(d, student, teacher, groups)
    assert grad is None or grad.abs().max() == 0
    d.prototype_grad = True
    assert group_level_gradient(d, student, teacher, groups).abs().max() > 0
    d.group_level, d.prototype_grad = "pe", False
    assert group_level_gradient(d, student, teacher, groups).abs().max() > 0


def test_htd_entity_mask_group_adds_the_teacher_dissimilar_pairs(small_data):
    d, student, teacher, groups = htd_distiller(small_data)
    assert d.entity_mask == "reference"
    with torch.no_grad():
        reference = d.topology_loss(student, teacher, groups)
        d.entity_mask = "group"
        every_pair = d.topology_loss(student, teacher, groups)
        dropped = (groups[:, None] == groups[None, :]) & (cosine_matrix(teacher, teacher) <= 0)
        gap = (cosine_matrix(student, student) - cosine_matrix(teacher, teacher)).pow(2)
    torch.testing.assert_close(every_pair - reference, (gap * dropped).sum())
    assert (gap * dropped).sum() > 0


def test_htd_temperature_follows_the_authors_schedule(small_data):
    _, _, _, model = build_model("HTD", small_data, epochs=10, htd_tau_end=1e-4)
    d = model.distillers[0]
    taus = []
    for epoch in (0, 1, 6, 11, 20):
        model.on_epoch_start(epoch)
        taus.append(d.tau)
    assert taus == pytest.approx([1.0, 1.0, 1e-2, 1e-4, 1e-4])


def test_htd_groups_are_hard_and_separate_for_users_and_items(small_data):
    d, _, teacher, _ = htd_distiller(small_data)
    groups = d.groups(teacher[:10], teacher[10:])
    assert (groups[:10] < d.n_groups).all() and (groups[10:] >= d.n_groups).all()
    # The most probable expert of the selection network, without Gumbel noise.
    alpha = torch.softmax(d.user_experts.selector(teacher[:10]), dim=-1)
    assert torch.equal(groups[:10], alpha.argmax(-1))
    assert torch.equal(groups[:10], d.groups(teacher[:10], teacher[10:])[:10])


# ---------------------------------------------------------------- keys

BAD_VALUES = [
    ("rd_weight", -1),
    ("rd_top_k", 0),
    ("rd_position_sharpness", 0),
    ("rd_mu", -0.1),
    ("rd_dynamic_samples", 0),
    ("rd_dynamic_start_epoch", -1),
    ("rd_weight_renormalize", "yes"),
    ("rd_rank_offset", 1),
    ("rd_dynamic_per", "batch"),
    ("cd_weight", -0.5),
    ("cd_guide", "both"),
    ("cd_redraw_each_epoch", "always"),
    ("cd_top_n", 0),
    ("cd_temperature", 0),
    ("cd_samples", 1.5),
    ("cd_label_temperature", 0),
    ("cd_label_shift", "zero"),
    ("dcd_weight_user", -1),
    ("dcd_weight_item", -1),
    ("dcd_top_n", 0),
    ("dcd_eps", 0),
    ("dcd_samples", 0),
    ("dcd_refresh_epochs", 0),
    ("dcd_weight_floor", -1e-5),
    ("dcd_rrd_weight", -1),
    ("htd_weight", -1),
    ("htd_alpha", 1.5),
    ("htd_num_groups", 0),
    ("htd_group_level", "ep"),
    ("htd_entity_mask", "all"),
    ("htd_prototype_grad", "no"),
    ("htd_tau_start", 0),
    ("htd_tau_end", -1),
    ("htd_anneal_epochs", 0),
]


def owner(key: str) -> str:
    """The method whose property file defines ``key``: its prefix, upper-cased."""
    return key.split("_")[0].upper()


@pytest.mark.parametrize("key,value", BAD_VALUES)
def test_out_of_range_values_name_the_key(small_data, key, value):
    with pytest.raises(KDConfigError, match=f"'{key}' = .* is invalid"):
        make_config(owner(key), small_data, **{key: value})


@pytest.mark.parametrize(
    "model,key", [("RD", "cd_weight"), ("HTD", "rd_top_k"), ("CD", "rrd_top_n")]
)
def test_another_methods_key_is_refused(small_data, model, key):
    with pytest.raises(KDConfigError, match=f"'{key}' belongs to"):
        make_config(model, small_data, **{key: 1})


def test_dcd_takes_rrds_keys_from_rrds_file_and_weights_its_term_by_its_own_key(small_data):
    config = make_config("DCD", small_data, rrd_weight=7.0, dcd_rrd_weight=0.5)
    assert config["rrd_temperature"] == 10 and config["rrd_subsample"] is True  # RRD.yaml
    _, _, _, model = build(config)
    assert model.distillers[2].weight == 0.5


def test_every_new_key_has_a_bad_value_test():
    new = {k for k in KEY_RULES if k.startswith(("rd_", "cd_", "dcd_", "htd_"))}
    assert new == {key for key, _ in BAD_VALUES}


@pytest.mark.parametrize(
    "typo,meant",
    [
        ("rd_top_kk", "rd_top_k"),
        ("cd_guid", "cd_guide"),
        ("dcd_sample", "dcd_samples"),
        ("htd_alpah", "htd_alpha"),
    ],
)
def test_misspelled_keys_are_refused_with_the_closest_name(small_data, typo, meant):
    with pytest.raises(KDConfigError, match=f"'{typo}'.*'{meant}'"):
        make_config(owner(meant), small_data, **{typo: 1})


def test_htd_tau_end_above_start_is_refused(small_data):
    with pytest.raises(KDConfigError, match="htd_tau_end"):
        make_config("HTD", small_data, htd_tau_start=0.1, htd_tau_end=0.5)


def test_htd_term_is_the_hand_computed_whole_of_its_parts(small_data):
    """The distiller's forward against the whole HTD term computed here pair by pair in
    float64: weight, alpha, the entity level, the group level and the experts, each in play."""
    import numpy as np

    config, train_data, _, model = build_model("HTD", small_data, htd_weight=0.7, htd_alpha=0.3,
                                               htd_group_level="pe")
    model.on_epoch_start(0)
    d = model.distillers[0]
    user, pos, neg = (t[:16] for t in first_batch(config, train_data))
    torch.manual_seed(5)
    with torch.no_grad():
        got = d(user, pos, neg).item()
        users, items = user.unique(), torch.cat([pos, neg]).unique()
        s_u, s_i = d.student_net.representations(users, items)
        t_u, t_i = d.teacher_user_rows(users), d.teacher_items[items]
        torch.manual_seed(5)  # the experts' Gumbel noise, drawn again in the same order
        experts = (d.user_experts(s_u, t_u, d.tau).sum()
                   + d.item_experts(s_i, t_i, d.tau).sum()).item()
        groups = d.groups(t_u, t_i).numpy()
    s = torch.cat([s_u, s_i]).double().numpy()
    t = torch.cat([t_u, t_i]).double().numpy()

    def cos(a, b):
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    entity = sum((cos(s[a], s[b]) - cos(t[a], t[b])) ** 2
                 for a in range(len(s)) for b in range(len(s))
                 if groups[a] == groups[b] and cos(t[a], t[b]) > 0)
    group = 0.0
    for g in sorted(set(groups)):
        members = groups == g
        proto_s, proto_t = s[members].mean(axis=0), t[members].mean(axis=0)
        group += sum((cos(proto_s, s[e]) - cos(proto_t, t[e])) ** 2 for e in range(len(s)))
    assert group > 0.01 * entity > 0 and experts > 0
    hand = 0.7 * (0.3 * (entity + group) + 0.7 * experts) / len(user)
    assert got == pytest.approx(hand, rel=1e-4)
