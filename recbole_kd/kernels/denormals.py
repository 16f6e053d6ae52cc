"""Subnormal floats flushed to zero while a trainer fits (CPU).

A float32 below 1.2e-38 is subnormal, and on x86 every multiply-add that reads or writes one
takes a slow microcode path. DE's and HTD's Gumbel-softmax weights make many of them: while the
temperature falls, the weights of the experts an entity did not choose pass through
1e-38 .. 1e-45 before they become exactly 0, and so do the gradients scaled by them. The
backward matrix products of the experts then ran more than ten times slower (measured:
results/de-cost.md). Flushing them to 0 changes nothing a float32 loss can tell apart: such a
weight already adds less than 1e-38 times an expert's output.

``torch.set_flush_denormal`` sets the calling thread's floating-point mode: it covers the
intra-op threads that run in it (one thread, as the benchmarks run), not necessarily a pool
started earlier. The previous mode is restored when ``fit`` ends.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

_SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


def flushing() -> bool:
    """Whether the calling thread flushes subnormals: half the smallest normal float32, kept
    in a tensor, reads back as 0 only then."""
    return torch.tensor([_SMALLEST_NORMAL]).div_(2).item() == 0.0


@contextmanager
def denormals_flushed():
    """Flush subnormal floats to zero inside the block (where the CPU supports it)."""
    before = flushing()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


class FlushDenormals:
    """Trainer mixin: ``fit`` runs with subnormal floats flushed to zero (``kd_flush_denormal``)."""

    def fit(self, *args, **kwargs):
        with denormals_flushed():
            return super().fit(*args, **kwargs)
