"""The teacher's and the student's own RecBole configs inside a distillation run."""

from __future__ import annotations

import copy
import os
from typing import Any

import recbole
import torch
import yaml
from recbole.config import Config
from recbole.data.transform import construct_transform
from recbole.utils import InputType, ModelType
from recbole.utils import get_model as recbole_get_model

from recbole_kd.errors import KDConfigError
from recbole_kd.model.init import KEY as INIT_KEY
from recbole_kd.model.init import LAYERS_KEY as INIT_LAYERS_KEY
from recbole_kd.model.row_loss import KEY as ROW_LOSS_KEY
from recbole_kd.properties import plugin_keys

# recbole_kd keys that configure a backbone itself: unlike the other plugin keys they stay in the
# backbone's derived config (and in teacher_config / student_config), so each model is built with
# them and a cached model's name covers them.
BACKBONE_KEYS = frozenset({INIT_KEY, INIT_LAYERS_KEY, ROW_LOSS_KEY})
# RecBole's form of train_neg_sample_args: ~ (no negative sampling).
NO_NEGATIVES = {"distribution": "none", "sample_num": "none", "alpha": "none", "dynamic": False,
                "candidate_num": 0}


def recbole_model(model_name: str, what: str) -> type:
    """RecBole's model class named ``model_name``; an unknown name is refused, with ``what``
    said of it."""
    # RecBole's sequential package switches autograd's anomaly detection on when imported (its
    # SINE module does, at import time): every backward then checks every gradient for NaN and
    # every forward records a traceback, which doubled a SASRec step. The user's own setting
    # is put back; no model's result changes.
    anomaly = torch.is_anomaly_enabled()
    try:
        return recbole_get_model(model_name)
    except (ValueError, ImportError, AttributeError) as error:
        # RecBole reaches an optional import (lightgbm) before admitting the name is unknown.
        raise KDConfigError(
            f"Unknown model '{model_name}'{what}. Check the spelling (names are case-sensitive, "
            "e.g. BPR, LightGCN)."
        ) from error
    finally:
        torch.autograd.set_detect_anomaly(anomaly)


def backbone_class(model_name: str, role: str) -> type:
    """RecBole's model class named ``model_name``, for the ``role`` ("teacher" or "student")."""
    return recbole_model(
        model_name, f" for {role}_model: the teacher and the student are RecBole models")


def model_defaults(config: Config, model_name: str) -> dict[str, Any]:
    """RecBole's default hyper-parameters of ``model_name`` (its properties/model YAML)."""
    path = os.path.join(os.path.dirname(recbole.__file__), "properties", "model", f"{model_name}.yaml")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return yaml.load(f.read(), Loader=config.yaml_loader) or {}


def input_type(model_class: type, loss_type: str | None) -> InputType:
    """RecBole's MODEL_INPUT_TYPE of a model: its class's, else (sequential models) its
    ``loss_type``'s, as RecBole's Config sets it."""
    if hasattr(model_class, "input_type"):
        return model_class.input_type
    return InputType.POINTWISE if loss_type == "CE" else InputType.PAIRWISE


def derive_config(config: Config, model_name: str, overrides: dict | None, role: str) -> Config:
    """A plain RecBole Config for ``model_name`` inside this run: same data, split and device.

    Precedence, lowest first: the run's settings, the model's RecBole defaults, what the user set
    explicitly (files, dict, command line), then ``overrides`` (``teacher_config`` and the like).
    recbole_kd's own keys are dropped (but ``BACKBONE_KEYS``), so the result pickles and loads with
    RecBole alone.
    """
    model_class = backbone_class(model_name, role)
    own_keys = plugin_keys() - BACKBONE_KEYS
    derived = Config.__new__(Config)
    derived.__dict__.update(
        copy.deepcopy({k: v for k, v in config.__dict__.items() if k != "model_class"})
    )
    final = dict(config.final_config_dict)
    for key, value in model_defaults(config, model_name).items():
        if key not in config.external_config_dict:  # what the user set explicitly stays
            final[key] = value
    final.update(overrides or {})
    if model_class.type == ModelType.SEQUENTIAL and final.get("loss_type") == "CE":
        # As RecBole trains it: its cross-entropy reads every item, no sampled negative.
        final["train_neg_sample_args"] = dict(NO_NEGATIVES)
    # A backbone key left at null is dropped too: the config (and a cached model's name) is then
    # what it was before the key existed.
    final = {k: v for k, v in final.items()
             if k not in own_keys and not (k in BACKBONE_KEYS and v is None)}
    final.update(model=model_name, MODEL_TYPE=model_class.type,
                 MODEL_INPUT_TYPE=input_type(model_class, final.get("loss_type")))
    derived.final_config_dict = final
    derived.internal_config_dict = {**derived.internal_config_dict, "MODEL_TYPE": model_class.type}
    for name in ("external_config_dict", "file_config_dict", "variable_config_dict", "cmd_config_dict"):
        setattr(derived, name, {k: v for k, v in getattr(derived, name).items() if k not in own_keys})
    derived.model, derived.model_class = model_name, model_class
    if final.get("transform"):
        construct_transform(derived)  # sets the batch fields the model reads (BERT4Rec's masks)
    return derived
