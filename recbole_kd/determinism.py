"""Deterministic kernels on CUDA (``kd_deterministic``).

On a CPU, recbole_kd's runs are bit-exact for a seed (RecBole's ``reproducibility``) with no
setting. On CUDA, several kernels accumulate in an order that changes from run to run: the
backward of ``index_add_`` and ``index_select`` with repeated indices (``list_scores``, HTD,
embedding lookups), ``scatter`` reductions and float ``cumsum``. ``kd_deterministic`` (on where
``reproducibility`` is, by default) asks PyTorch for its deterministic implementations and sets
``CUBLAS_WORKSPACE_CONFIG``, which cuBLAS needs for reproducible products. An operation with no
deterministic CUDA implementation then warns rather than stops the run.
"""

from __future__ import annotations

import os

import torch

CUBLAS_WORKSPACE = ":4096:8"  # the setting PyTorch's reproducibility notes give for cuBLAS


def deterministic(config_dict: dict) -> bool:
    """Whether ``config_dict`` asks for deterministic kernels: ``kd_deterministic``, or
    RecBole's ``reproducibility`` where it is unset."""
    value = config_dict.get("kd_deterministic")
    return bool(config_dict.get("reproducibility")) if value is None else bool(value)


def apply(config_dict: dict) -> None:
    """Deterministic kernels for a run on CUDA, as ``config_dict`` asks; nothing on a CPU.
    Called when the run's device is known, before any CUDA work."""
    device = config_dict.get("device")
    if device is None or torch.device(device).type != "cuda" or not deterministic(config_dict):
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
