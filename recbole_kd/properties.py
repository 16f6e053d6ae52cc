"""The plugin's shipped YAML files: defaults of every key, teacher/student pairs, protocols,
data sets and search spaces, found by name.

The YAML files are the one source of each default: ``overall.yaml`` holds the keys of every run,
``model/<Model>.yaml`` those of one method (a method composed of others, such as DERRD, takes
its parts' files, see ``defaults_from`` on the model class).
"""

from __future__ import annotations

import glob
import os
from functools import cache

import recbole
import yaml

from recbole_kd.errors import KDConfigError

# Shipped config files usable by name: teacher/student pairs, evaluation protocols, data sets,
# and the papers' reference training setups.
CONFIG_FOLDERS = ("pairs", "protocols", "datasets", "reference")


@cache
def properties_dir() -> str:
    """The YAML defaults: inside the installed package, or the checkout's top-level folder."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "properties"), os.path.join(here, "..", "properties")):
        if os.path.isfile(os.path.join(candidate, "overall.yaml")):
            return os.path.normpath(candidate)
    raise FileNotFoundError("recbole_kd's properties folder is missing: reinstall the package.")


def read_yaml(path: str) -> dict:
    """A YAML mapping from ``path``; a syntax error names the file and line."""
    with open(path, encoding="utf-8") as f:
        try:
            values = yaml.safe_load(f)
        except yaml.YAMLError as error:
            raise KDConfigError(f"'{path}' is not valid YAML: {error}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise KDConfigError(f"'{path}' must hold 'key: value' lines, not a {type(values).__name__}.")
    return values


def model_file(name: str) -> str:
    """Path of ``properties/model/<name>.yaml`` (which may not exist)."""
    return os.path.join(properties_dir(), "model", f"{name}.yaml")


@cache
def recbole_keys() -> frozenset[str]:
    """Every key of RecBole's own property files (overall, models, data sets)."""
    folder = os.path.join(os.path.dirname(recbole.__file__), "properties")
    keys: set[str] = set()
    for path in glob.glob(os.path.join(folder, "**", "*.yaml"), recursive=True):
        with open(path, encoding="utf-8") as f:
            values = yaml.load(f, Loader=yaml.FullLoader)  # RecBole's files use !!python tags
        if isinstance(values, dict):
            keys.update(values)
    return frozenset(keys)


@cache
def method_keys() -> dict[str, frozenset[str]]:
    """The keys each method's property file defines (RecBole's own keys aside), by method."""
    folder = os.path.join(properties_dir(), "model")
    return {
        name[: -len(".yaml")]:
            frozenset(read_yaml(os.path.join(folder, name))) - recbole_keys()
        for name in sorted(os.listdir(folder)) if name.endswith(".yaml")
    }


@cache
def common_keys() -> frozenset[str]:
    """The keys ``overall.yaml`` defines (RecBole's own keys aside): those of every run."""
    return frozenset(read_yaml(os.path.join(properties_dir(), "overall.yaml"))) - recbole_keys()


def plugin_keys() -> frozenset[str]:
    """Every key recbole_kd defines, in any of its property files."""
    return common_keys().union(*method_keys().values())


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
    raise KDConfigError(
        f"'{name}' is neither a file nor one of recbole_kd's shipped files "
        f"({', '.join(available)})."
    )


def pair_file(name: str) -> str:
    """A config file path, or the name of a shipped pair, protocol or data set file."""
    return shipped_file(name, *CONFIG_FOLDERS)


def resolve_config_files(value: str | None) -> list[str] | None:
    """Split ``--config_files`` on spaces and resolve each entry with :func:`pair_file`."""
    return [pair_file(name) for name in value.split()] if value else None


def read_pair(name: str) -> dict:
    """The settings of a pair file, given by path or shipped name."""
    return read_yaml(pair_file(name))


def parse_settings(items: list[str] | None) -> dict[str, str]:
    """``["epochs=50", "topk=[10,20]"]`` -> ``{"epochs": "50", "topk": "[10,20]"}``: values stay
    text, which RecBole's Config converts as it converts ``--key=value`` on its command line."""
    settings = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise KDConfigError(f"Setting '{item}' is not of the form key=value.")
        settings[key] = value
    return settings
