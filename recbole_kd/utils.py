"""Model and trainer lookup: recbole_kd first, then RecBole; the plugin's property folder."""

from __future__ import annotations

import importlib
import os
from functools import cache, lru_cache

from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

_KD_MODELS = {"DE": "de", "RRD": "rrd", "DERRD": "derrd", "BD": "bd"}


@lru_cache(maxsize=1)
def properties_dir() -> str:
    """The YAML defaults: inside the installed package, or the checkout's top-level folder."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "properties"), os.path.join(here, "..", "properties")):
        if os.path.isfile(os.path.join(candidate, "overall.yaml")):
            return os.path.normpath(candidate)
    raise FileNotFoundError("recbole_kd's properties folder is missing: reinstall the package.")


def is_kd_model(name: str) -> bool:
    return name in _KD_MODELS


def get_model(model_name: str) -> type:
    """The model class named ``model_name``: a recbole_kd model, else one of RecBole's."""
    if model_name in _KD_MODELS:
        module = importlib.import_module(f"recbole_kd.model.{_KD_MODELS[model_name]}")
        return getattr(module, model_name)
    try:
        return recbole_get_model(model_name)
    except (ValueError, ImportError, AttributeError) as error:
        # RecBole reaches an optional import (lightgbm) before admitting the name is unknown.
        raise ValueError(
            f"Unknown model '{model_name}': not a recbole_kd model ({', '.join(_KD_MODELS)}) "
            "nor a RecBole model. Check the spelling (names are case-sensitive, e.g. BPR, LightGCN)."
        ) from error


def get_trainer(model_type, model_name: str) -> type:
    """The trainer for ``model_name``: recbole_kd's for its models, else RecBole's."""
    if model_name in _KD_MODELS:
        from recbole_kd import trainer

        return trainer.BDTrainer if model_name == "BD" else trainer.KDTrainer
    return recbole_get_trainer(model_type, model_name)


@cache
def with_mixin(mixin: type, trainer_class: type, prefix: str, summary: str) -> type:
    """``trainer_class`` with ``mixin`` in front, named ``prefix`` + its name; one class per pair,
    so repeated runs share it."""
    return type(
        f"{prefix}{trainer_class.__name__}",
        (mixin, trainer_class),
        {"__doc__": f"{trainer_class.__name__} {summary}"},
    )
