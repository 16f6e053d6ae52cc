"""Helpers of the command line: shipped pair files by name."""

from __future__ import annotations

import os

from recbole_kd.utils import properties_dir


def pair_file(name: str) -> str:
    """Path of a config file: ``name`` itself if it exists, else the shipped pair of that name."""
    if os.path.isfile(name):
        return name
    stem = name.removesuffix(".yaml")
    shipped = os.path.join(properties_dir(), "pairs", f"{stem}.yaml")
    if os.path.isfile(shipped):
        return shipped
    available = sorted(f[:-5] for f in os.listdir(os.path.join(properties_dir(), "pairs")))
    raise FileNotFoundError(
        f"Config file '{name}' not found, and it is not a shipped pair ({', '.join(available)})."
    )


def resolve_config_files(value: str | None) -> list[str] | None:
    """Split ``--config_files`` on spaces and resolve each entry with :func:`pair_file`."""
    return [pair_file(name) for name in value.split()] if value else None
