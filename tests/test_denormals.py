"""kd_flush_denormal: subnormal floats read as 0 while a trainer fits, and only then."""

from __future__ import annotations

import pytest
import torch

from recbole_kd.kernels.denormals import denormals_flushed, flushing
from recbole_kd.model.layers import DistillationExperts
from recbole_kd.model.loss import expert_reconstruction_loss
from tests.conftest import build, make_config, trainer_for

TINY = torch.finfo(torch.float32).tiny  # the smallest normal float32


def test_the_block_flushes_subnormals_and_restores_the_mode():
    assert not flushing()
    with denormals_flushed():
        assert flushing()
        assert torch.tensor([TINY]).div_(4).item() == 0.0
    assert not flushing()
    assert torch.tensor([TINY]).div_(4).item() == TINY / 4


@pytest.mark.parametrize("on", [True, False])
def test_a_trainer_fits_under_the_key_s_mode(small_data, monkeypatch, on):
    config = make_config("BPR", small_data, embedding_size=8, epochs=1, kd_flush_denormal=on)
    train_data, valid_data, test_data, net = build(config)
    trainer = trainer_for(config, net, (train_data, valid_data, test_data))
    seen = []
    train_epoch = trainer._train_epoch
    monkeypatch.setattr(trainer, "_train_epoch",
                        lambda *args, **kwargs: seen.append(flushing()) or train_epoch(*args, **kwargs))
    trainer.fit(train_data, valid_data, saved=False, show_progress=False)
    assert seen == [on]
    assert not flushing()  # restored when fit ends


def test_flushed_expert_gradients_equal_the_ieee_ones_to_float32_precision():
    # Gumbel weights spread over 1e-45 .. 1: the unchosen experts' weights are subnormal.
    torch.manual_seed(0)
    experts = DistillationExperts(student_dim=4, teacher_dim=12, num_experts=6)
    student, teacher = torch.randn(64, 4), torch.randn(64, 12)
    z = torch.softmax(torch.randn(64, 6) * 40, dim=-1)
    assert ((z > 0) & (z < TINY)).any()

    def gradients():
        experts.zero_grad()
        reconstruction = experts.reconstruct(student, z, sparse=False)
        expert_reconstruction_loss(teacher, reconstruction).sum().backward()
        return [param.grad.clone() for param in (experts.w1, experts.w2, experts.b2)]

    ieee = gradients()
    with denormals_flushed():
        flushed = gradients()
    for a, b in zip(flushed, ieee):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-30)
