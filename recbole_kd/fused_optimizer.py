"""Adam and AdamW through PyTorch's fused kernel, for every trainer this runner builds.

RecBole builds ``torch.optim.Adam`` with its defaults, which on CPU updates each parameter in
several passes (moments, square root, division, step); the fused kernel makes one. One step over
DE's experts and embedding tables (1.5 M parameters, one thread) measured 3.5 ms that way and
1.5 ms fused with its data in cache, and more apart within training (``benchmarks/kernels.py``,
``benchmarks/speed.py``). The update is the same algorithm; results differ from the unfused
kernel by float rounding only. Applied to baselines as to distillation, so
comparisons run by recbole_kd keep one optimizer implementation.
"""

from __future__ import annotations

import torch

from recbole_kd.utils import with_mixin

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


def with_fused_optimizer(trainer_class: type, config) -> type:
    """``trainer_class`` with fused Adam and AdamW when ``kd_fused_optimizer`` is on; else itself."""
    if not config["kd_fused_optimizer"] or issubclass(trainer_class, FusedOptimizer):
        return trainer_class
    return with_mixin(FusedOptimizer, trainer_class, "Fused", "whose Adam and AdamW run fused.")
