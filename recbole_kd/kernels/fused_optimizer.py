"""Adam and AdamW through PyTorch's fused kernel, for every trainer this runner builds.

RecBole builds ``torch.optim.Adam`` with its defaults, which on CPU updates each parameter in
several passes (moments, square root, division, step); the fused kernel makes one (measured
gains: docs/performance.md). The update is the same algorithm; results differ from the unfused
kernel by float rounding only. Applied to baselines as to distillation, so comparisons run by
recbole_kd keep one optimizer implementation.
"""

from __future__ import annotations

import torch

_FUSABLE = (torch.optim.Adam, torch.optim.AdamW)


def fused_copy(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """A fused equivalent of a fresh Adam or AdamW ``optimizer``; anything else is returned as is.

    Left as is: other optimizers, an optimizer that already has state or is already fused, and
    parameters the fused kernel does not take (sparse, non-float, or on another device type).
    """
    if type(optimizer) not in _FUSABLE or optimizer.state:
        return optimizer
    groups = optimizer.param_groups
    params = [param for group in groups for param in group["params"]]
    if any(group.get("fused") for group in groups) or not all(map(_fusable, params)):
        return optimizer
    # Each group keeps its own settings; only the kernel choice is replaced.
    settings = [{k: v for k, v in group.items() if k not in ("foreach", "fused")} for group in groups]
    return type(optimizer)(settings, fused=True)


def _fusable(param: torch.Tensor) -> bool:
    return param.is_floating_point() and not param.is_sparse and param.device.type in ("cpu", "cuda")


class FusedOptimizer:
    """Trainer mixin: every optimizer the trainer builds is passed through :func:`fused_copy`."""

    def _build_optimizer(self, **kwargs):
        return fused_copy(super()._build_optimizer(**kwargs))
