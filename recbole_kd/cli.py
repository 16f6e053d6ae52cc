"""Helpers of the command line: shipped pair and params files by name."""

from __future__ import annotations

import os

import yaml

from recbole_kd.utils import properties_dir

# Shipped config files usable by name: teacher/student pairs, evaluation protocols, data sets.
CONFIG_FOLDERS = ("pairs", "protocols", "datasets")


def shipped_file(name: str, *folders: str) -> str:
    """``name`` itself if it is a file, else the file of that name in properties/<folder>."""
    if os.path.isfile(name):
        return name
    available = []
    for folder in folders:
        shipped_dir = os.path.join(properties_dir(), folder)
        for candidate in (name, f"{name}.yaml"):
            path = os.path.join(shipped_dir, candidate)
            if os.path.isfile(path):
                return path
        if os.path.isdir(shipped_dir):
            available += [f"{folder}/{f}" for f in sorted(os.listdir(shipped_dir))]
    raise FileNotFoundError(
        f"'{name}' is neither a file nor one of recbole_kd's shipped files "
        f"({', '.join(available)})."
    )


def pair_file(name: str) -> str:
    """A config file path, or the name of a shipped pair, protocol or data set file."""
    return shipped_file(name, *CONFIG_FOLDERS)


def resolve_config_files(value: str | None) -> list[str] | None:
    """Split ``--config_files`` on spaces and resolve each entry with :func:`pair_file`."""
    return [pair_file(name) for name in value.split()] if value else None


def parse_settings(items: list[str] | None) -> dict:
    """``["epochs=50", "topk=[10,20]"]`` -> ``{"epochs": 50, "topk": [10, 20]}`` (YAML values)."""
    settings = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"Setting '{item}' is not of the form key=value.")
        settings[key] = yaml.safe_load(value)
    return settings


def read_pair(name: str) -> dict:
    """The settings of a pair file, given by path or shipped name."""
    with open(pair_file(name), encoding="utf-8") as f:
        return yaml.safe_load(f)
