"""kd_fused_optimizer: Adam and AdamW through PyTorch's fused kernel, for every trainer built."""

from __future__ import annotations

import pytest
import torch

from recbole_kd.kernels.fused_optimizer import fused_copy
from tests.conftest import build, make_config, trainer_for


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in ((7, 3), (5,))]


def test_fused_copy_keeps_every_groups_settings():
    first, second = _params()
    optimizer = torch.optim.AdamW(
        [{"params": [first], "lr": 0.1}, {"params": [second], "weight_decay": 0.5}], lr=0.01
    )
    fused = fused_copy(optimizer)
    assert type(fused) is torch.optim.AdamW
    for old, new in zip(optimizer.param_groups, fused.param_groups):
        assert new["fused"] is True and new["params"] == old["params"]
        assert {k: v for k, v in new.items() if k not in ("fused", "foreach")} == {
            k: v for k, v in old.items() if k not in ("fused", "foreach")
        }


def test_fused_copy_leaves_other_optimizers_alone():
    sgd = torch.optim.SGD(_params(), lr=0.1)
    assert fused_copy(sgd) is sgd
    stepped = torch.optim.Adam(_params(), lr=0.1)
    for param in stepped.param_groups[0]["params"]:
        param.grad = torch.ones_like(param)
    stepped.step()  # holds moments now: rebuilding it would lose them
    assert fused_copy(stepped) is stepped
    meta = torch.optim.Adam([torch.nn.Parameter(torch.empty(3, device="meta"))])
    assert fused_copy(meta) is meta


def test_fused_and_default_adam_take_the_same_steps():
    default_params, fused_params = _params(), _params()
    default = torch.optim.Adam(default_params, lr=0.01, weight_decay=0.1)
    fused = fused_copy(torch.optim.Adam(fused_params, lr=0.01, weight_decay=0.1))
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        for a, b in zip(default_params, fused_params):
            a.grad = torch.randn(a.shape, generator=generator)
            b.grad = a.grad.clone()
        default.step()
        fused.step()
    moved = sum(float((a - b).detach().abs().sum()) for a, b in zip(default_params, _params()))
    assert moved > 0.1
    for a, b in zip(default_params, fused_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _optimizers(trainer) -> list[torch.optim.Optimizer]:
    return list(getattr(trainer, "optimizers", {}).values()) or [trainer.optimizer]


@pytest.mark.parametrize("model", ["BPR", "BD"])
@pytest.mark.parametrize("on", [True, False])
def test_trainers_of_baselines_and_distillation_follow_the_key(small_data, model, on):
    config = make_config(model, small_data, embedding_size=8, kd_fused_optimizer=on)
    train_data, valid_data, test_data, net = build(config)
    trainer = trainer_for(config, net, (train_data, valid_data, test_data))
    optimizers = _optimizers(trainer)
    assert len(optimizers) == (2 if model == "BD" else 1)
    for optimizer in optimizers:
        assert all(bool(group["fused"]) is on for group in optimizer.param_groups)
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)  # and they train
