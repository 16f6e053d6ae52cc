"""Wall-clock timing that measures compute on a GPU too: CUDA kernels run asynchronously, so a
clock read right after launching them measures the launches, not the work."""

from __future__ import annotations

import time

import torch


def synchronize() -> None:
    """Wait for the GPU's queued work (nothing to wait for on a CPU-only machine)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def clock() -> float:
    """``time.perf_counter()`` once every queued GPU kernel has finished."""
    synchronize()
    return time.perf_counter()
