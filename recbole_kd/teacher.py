"""Pre-trained teacher (or BD warm-up) models: from a validated checkpoint, or trained and cached.

A model distilled from must have been trained on exactly this run's split: otherwise it has seen
the student's validation and test items. A checkpoint is therefore checked against the run's data
set, seed, split and filtering settings; a model trained here is cached under ``saved/`` with a
name derived from everything that determines it, and reused when the same run is repeated.
"""

from __future__ import annotations

import copy
import hashlib
import os
from logging import getLogger
from typing import Any

import recbole
import torch
import yaml
from recbole.config import Config
from recbole.utils import init_seed

from recbole_kd.backbone import check_general_model
from recbole_kd.config import KEY_RULES
from recbole_kd.data import make_loaders
from recbole_kd.protocol import create_trainer
from recbole_kd.utils import get_model, is_kd_model

# Settings that decide which interactions land in train, validation and test.
SPLIT_KEYS = (
    "seed",
    "eval_args",
    "benchmark_filename",
    "rm_dup_inter",
    "val_interval",
    "filter_inter_by_user_or_item",
    "user_inter_num_interval",
    "item_inter_num_interval",
    "load_col",
    "unload_col",
    "unused_col",
    "threshold",
)

# Settings that do not change what a trained model is, left out of the cache name.
_NOT_IDENTITY = {
    "device", "gpu_id", "use_gpu", "show_progress", "state", "checkpoint_dir", "data_path",
    "eval_batch_size", "worker", "log_wandb", "wandb_project", "save_dataset", "save_dataloaders",
    "dataset_save_path", "dataloaders_save_path", "local_rank", "nproc", "world_size", "offset",
    "ip", "port", "single_spec", "config_files", "metrics", "topk", "valid_metric",
    "metric_decimal_place", "loss_decimal_place",
}


class CheckpointError(ValueError):
    """A pre-trained model's checkpoint is missing, unreadable or from another split."""


def model_defaults(config: Config, model_name: str) -> dict[str, Any]:
    """RecBole's default hyper-parameters of ``model_name`` (its properties/model YAML)."""
    path = os.path.join(os.path.dirname(recbole.__file__), "properties", "model", f"{model_name}.yaml")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return yaml.load(f.read(), Loader=config.yaml_loader) or {}


def derive_config(config: Config, model_name: str, overrides: dict | None, role: str) -> Config:
    """A plain RecBole Config for ``model_name`` inside this run: same data, split and device.

    Precedence, lowest first: the run's settings, the model's RecBole defaults, what the user set
    explicitly (files, dict, command line), then ``overrides`` (``teacher_config`` and the like).
    recbole_kd's own keys are dropped, so the result pickles and loads with RecBole alone.
    """
    model_class = get_model(model_name)
    check_general_model(model_class, role)
    derived = Config.__new__(Config)
    derived.__dict__.update(
        copy.deepcopy({k: v for k, v in config.__dict__.items() if k != "model_class"})
    )
    final = dict(config.final_config_dict)
    for key, value in model_defaults(config, model_name).items():
        if key not in config.external_config_dict:  # what the user set explicitly stays
            final[key] = value
    final.update(overrides or {})
    for key in list(final):
        if key in KEY_RULES:
            del final[key]
    final.update(model=model_name, MODEL_TYPE=model_class.type, MODEL_INPUT_TYPE=model_class.input_type)
    derived.final_config_dict = final
    derived.internal_config_dict = {**derived.internal_config_dict, "MODEL_TYPE": model_class.type}
    for name in ("external_config_dict", "file_config_dict", "variable_config_dict", "cmd_config_dict"):
        setattr(derived, name, {k: v for k, v in getattr(derived, name).items() if k not in KEY_RULES})
    derived.model, derived.model_class = model_name, model_class
    return derived


def cache_path(config: Config, derived: Config, role: str) -> str:
    """``saved/<role>-<Model>-<dataset>-<hash>.pth``: the hash covers every setting that matters."""
    identity = sorted(
        (k, repr(v)) for k, v in derived.final_config_dict.items() if k not in _NOT_IDENTITY
    )
    digest = hashlib.sha1(repr(identity).encode()).hexdigest()[:12]
    name = f"{role}-{derived['model']}-{derived['dataset']}-{digest}.pth"
    return os.path.join(config["checkpoint_dir"], name)


def _read_checkpoint(path: str, key: str) -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(
            f"{key} '{path}' does not exist. Point it to a checkpoint saved by RecBole "
            f"(run_recbole(..., saved=True)) or by recbole_kd, or unset {key} to train one here."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(
            f"{key} '{path}' could not be read ({type(error).__name__}: {error}): it is corrupt "
            "or not a RecBole checkpoint. Retrain it, or unset the key to train one here."
        ) from error
    if not isinstance(checkpoint, dict) or not {"config", "state_dict"} <= set(checkpoint):
        raise CheckpointError(
            f"{key} '{path}' is not a RecBole checkpoint (no 'config' and 'state_dict')."
        )
    return checkpoint


def _check_same_split(saved: Config, config: Config, key: str, path: str) -> None:
    if saved["dataset"] != config["dataset"]:
        raise CheckpointError(
            f"{key} '{path}' was trained on data set '{saved['dataset']}', this run uses "
            f"'{config['dataset']}'."
        )
    for name in SPLIT_KEYS:
        if saved[name] != config[name]:
            raise CheckpointError(
                f"{key} '{path}' was trained with {name}={saved[name]!r}, this run has "
                f"{name}={config[name]!r}: it saw another split, including this run's test items. "
                f"Set {name} to match, or unset {key} to train the model on this split."
            )


def load_pretrained(config: Config, role: str) -> tuple[str, dict, dict]:
    """Validate ``<role>_checkpoint``: (model name, its hyper-parameters, state_dict)."""
    key = f"{role}_checkpoint"
    path = config[key]
    checkpoint = _read_checkpoint(path, key)
    saved = checkpoint["config"]
    name = saved["model"]
    if is_kd_model(name):
        raise CheckpointError(
            f"{key} '{path}' is a {name} (distillation) checkpoint. Use the student it exported "
            "(printed at the end of that run, '<...>-student.pth') or a plain model checkpoint."
        )
    wanted = config[f"{role}_model"]
    if wanted and wanted != name:
        raise CheckpointError(f"{key} '{path}' holds a {name} model, but {role}_model is {wanted}.")
    _check_same_split(saved, config, key, path)
    hyper = {k: saved[k] for k in model_defaults(config, name) if k in saved}
    return name, hyper, checkpoint["state_dict"]


def train_and_cache(config: Config, dataset, parts, role: str) -> tuple[str, dict, dict]:
    """Train ``<role>_model`` alone on this run's split, or reuse the cached result."""
    name = config[f"{role}_model"]
    overrides = config[f"{role}_config"] or {}
    derived = derive_config(config, name, overrides, role)
    path = cache_path(config, derived, role)
    logger = getLogger()
    if os.path.isfile(path):
        logger.info(f"Reusing the {role} trained earlier on this split: {path}")
    else:
        logger.info(f"Training the {role} ({name}, {overrides}) on this run's split")
        train_alone(config, derived, dataset, parts, path)
        logger.info(f"Saved the {role}: {path}")
    return name, overrides, torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def train_alone(config: Config, derived: Config, dataset, parts, path: str) -> None:
    """Train the model of ``derived`` on this run's split and save its best state at ``path``."""
    loaders = make_loaders(derived, dataset, parts)
    train_data, valid_data, _ = loaders
    init_seed(config["seed"], config["reproducibility"])
    model = derived.model_class(derived, train_data._dataset).to(derived["device"])
    # Selected under the run's evaluation protocol, like the distilled model will be.
    trainer = create_trainer(config, model, loaders, model_config=derived)
    # Written under a temporary name and renamed when done: an interrupted run never leaves a
    # half-trained model where a later run would take it for a finished one.
    trainer.saved_model_file = path + ".partial"
    trainer.fit(train_data, valid_data, saved=True, show_progress=config["show_progress"])
    os.replace(trainer.saved_model_file, path)


def resolve_pretrained(config: Config, dataset, parts, role: str = "teacher") -> dict:
    """The pre-trained ``role`` model's weights; records its model and hyper-parameters in config.

    Afterwards ``config['<role>_model']`` and ``config['<role>_config']`` describe the model the
    weights belong to, so the distillation model (and its checkpoint) rebuild it exactly.
    """
    if config[f"{role}_checkpoint"]:
        name, hyper, state = load_pretrained(config, role)
    else:
        name, hyper, state = train_and_cache(config, dataset, parts, role)
    config[f"{role}_model"], config[f"{role}_config"] = name, hyper
    return state
