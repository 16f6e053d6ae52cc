"""kd_keep_freed_memory: freed gradient buffers stay in the heap instead of being page-faulted in."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from recbole_kd import heap
from recbole_kd.protocol import create_trainer
from recbole_kd.quick_start import build
from tests.conftest import make_config

# 40 steps of an embedding model with a 25,000 x 200 item table (a 20 MB dense gradient per lookup,
# three lookups per step, gradients freed by zero_grad); prints the minor page faults of the last 20.
TRAINING_STEPS = """
import resource, torch
from recbole_kd.heap import keep_freed_memory
assert keep_freed_memory()
torch.manual_seed(0)
users, items = torch.nn.Embedding(5000, 200), torch.nn.Embedding(25000, 200)
optimizer = torch.optim.Adam([*users.parameters(), *items.parameters()], fused=True)
for step in range(40):
    if step == 20:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    u, p, n = (torch.randint(0, size, (2048,)) for size in (5000, 25000, 25000))
    user_e = users(u)
    difference = (user_e * items(p)).sum(-1) - (user_e * items(n)).sum(-1)
    loss = -torch.nn.functional.logsigmoid(difference).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


@pytest.mark.skipif(heap._glibc() is None, reason="the heap setting applies to glibc only")
def test_freed_gradients_are_reused_without_page_faults():
    result = subprocess.run(
        [sys.executable, "-c", TRAINING_STEPS],
        capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    faults = int(result.stdout.split()[-1])
    # A gradient buffer is 4,883 pages. With the setting, 8 runs measured 0 to 4,883 faults (the
    # heap at most growing once more); with glibc's adaptive defaults, 2,706 to 57,012 (mostly
    # above 17,000), the buffers being mapped afresh step after step.
    assert faults < 2 * 4_883


@pytest.mark.parametrize("on", [True, False])
def test_trainers_apply_the_setting_under_the_key(small_data, monkeypatch, on):
    calls = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append(1) or True)
    config = make_config("BPR", small_data, embedding_size=8, kd_keep_freed_memory=on)
    train_data, valid_data, test_data, net = build(config)
    create_trainer(config, net, (train_data, valid_data, test_data))
    assert len(calls) == (1 if on else 0)
