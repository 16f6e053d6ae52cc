"""kd_keep_freed_memory: freed gradient-sized blocks stay in the heap instead of being remapped."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from recbole_kd.kernels import heap
from tests.conftest import REPOSITORY, build, make_config, trainer_for

# In a fresh process, a 20 MB tensor (a 25k x 200 gradient) is allocated and freed; glibc's own
# statistics (mallinfo2) tell whether it was a fresh mapping and whether the heap kept it.
ONE_BLOCK = """
import ctypes, sys, torch
from recbole_kd.kernels.heap import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "on":
    assert keep_freed_memory()
before = libc.mallinfo2()
block = torch.ones(5_000_000)
alive = libc.mallinfo2()
del block
freed = libc.mallinfo2()
print(alive.hblkhd - before.hblkhd, freed.fordblks)
"""
BLOCK = 20_000_000


def _one_block(setting: str) -> tuple[int, int]:
    """(bytes freshly mapped while the block lived, free bytes the heap held once it was freed)"""
    result = subprocess.run(
        [sys.executable, "-c", ONE_BLOCK, setting],
        capture_output=True, text=True, check=True,
        # The checkout's recbole_kd, whatever is installed.
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPOSITORY},
    )
    mapped, free_in_heap = map(int, result.stdout.split())
    return mapped, free_in_heap


@pytest.mark.skipif(
    heap._glibc() is None or not hasattr(heap._glibc(), "mallinfo2"),
    reason="the heap setting applies to glibc only (mallinfo2 from glibc 2.33)",
)
def test_a_freed_gradient_sized_block_stays_in_the_heap():
    mapped, free_in_heap = _one_block("on")
    # Served from the heap, not from a fresh mapping, and kept there once freed, for later
    # gradients to reuse rather than fault new pages in.
    assert mapped < BLOCK // 2
    assert free_in_heap >= BLOCK
    # Under glibc's defaults the first such block is a fresh mapping, unmapped when freed.
    mapped, free_in_heap = _one_block("off")
    assert mapped >= BLOCK and free_in_heap < BLOCK // 2


@pytest.mark.parametrize("on", [True, False])
def test_trainers_apply_the_setting_under_the_key(small_data, monkeypatch, on):
    calls = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append(1) or True)
    config = make_config("BPR", small_data, embedding_size=8, kd_keep_freed_memory=on)
    train_data, valid_data, test_data, net = build(config)
    trainer_for(config, net, (train_data, valid_data, test_data))
    assert len(calls) == (1 if on else 0)
