"""Models distilled from: a teacher (and BD's two warm-ups), from a checkpoint or trained here.

A model distilled from must have been trained on exactly this run's split: otherwise it has seen
the student's validation and test items. A checkpoint is checked against the run's data set,
split settings and split contents; a model trained here is cached under ``saved/`` with a name
derived from the split's contents and every setting that changes its training or selection, and
reused when the same run is repeated.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import nullcontext
from dataclasses import dataclass
from logging import getLogger

from recbole.config import Config
from recbole.utils import init_seed

from recbole_kd import checkpoint, distributed
from recbole_kd.data import make_loaders, split_fingerprint
from recbole_kd.errors import CheckpointError
from recbole_kd.file_lock import locked
from recbole_kd.model.init import initialise
from recbole_kd.model.role_config import derive_config, model_defaults
from recbole_kd.registry import is_kd_model
from recbole_kd.trainer.factory import create_trainer
from recbole_kd.trainer.resumable import ResumableTrainer

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
    "MAX_ITEM_LIST_LENGTH",  # a sequential row's history, and so what its model sees
)

# Settings that change neither what a model learns nor which epoch is kept: left out of the
# cache name. (data_path is replaced by the split's contents, which the name covers.)
_NOT_IDENTITY = {
    "device", "gpu_id", "use_gpu", "show_progress", "state", "checkpoint_dir", "data_path",
    "eval_batch_size", "worker", "log_wandb", "wandb_project", "save_dataset", "save_dataloaders",
    "dataset_save_path", "dataloaders_save_path", "local_rank", "nproc", "world_size", "offset",
    "ip", "port", "single_spec", "config_files", "metrics", "topk", "verbose",
    "metric_decimal_place", "loss_decimal_place",
}
# recbole_kd's own keys that decide how a model trained alone is selected on validation.
_SELECTION_KEYS = ("kd_eval_protocol", "kd_eval_negatives")


def first_difference(saved_config: Config, config: Config, keys) -> str | None:
    """The first of ``keys`` whose value in a checkpoint's config differs from this run's."""
    return next((key for key in keys if saved_config[key] != config[key]), None)


@dataclass
class Pretrained:
    """A model trained before distillation: what it is and its weights."""

    role: str  # "teacher" or "student" (BD's student warm-up)
    model: str  # RecBole model name
    config: dict  # its hyper-parameters (overrides of the model's RecBole defaults)
    state_dict: dict | None  # dropped once loaded into the model and tested (take_pretrained_states)
    path: str  # the checkpoint it came from


def resolve_pretrained(config: Config, dataset, parts, role: str = "teacher") -> Pretrained:
    """The ``role`` model of this run: ``<role>_checkpoint``, validated, or trained alone on this
    split (cached)."""
    if config[f"{role}_checkpoint"]:
        return load_pretrained(config, dataset, parts, role)
    return train_and_cache(config, dataset, parts, role)


def load_pretrained(config: Config, dataset, parts, role: str) -> Pretrained:
    """Validate ``<role>_checkpoint`` against this run and read it."""
    key = f"{role}_checkpoint"
    path = config[key]
    saved = checkpoint.read(path, key)
    saved_config = saved["config"]
    name = saved_config["model"]
    if is_kd_model(name):
        raise CheckpointError(
            f"{key} '{path}' is a {name} (distillation) checkpoint. Use the student it exported "
            "(printed at the end of that run, '<...>-student.pth') or a plain model checkpoint."
        )
    wanted = config[f"{role}_model"]
    if wanted and wanted != name:
        raise CheckpointError(
            f"{key} '{path}' holds a {name} model, but {role}_model is {wanted}: set "
            f"{role}_model: {name}, or point {key} to a {wanted} checkpoint."
        )
    check_same_split(saved, config, dataset, parts, key, path)
    hyper = {k: saved_config[k] for k in model_defaults(config, name) if k in saved_config}
    return Pretrained(role, name, hyper, saved["state_dict"], path)


def check_same_split(saved: dict, config: Config, dataset, parts, key: str, path: str) -> None:
    """Refuse a checkpoint trained on another data set, split settings or split contents."""
    saved_config = saved["config"]
    if saved_config["dataset"] != config["dataset"]:
        raise CheckpointError(
            f"{key} '{path}' was trained on data set '{saved_config['dataset']}', this run uses "
            f"'{config['dataset']}': point {key} to a checkpoint of this data set."
        )
    name = first_difference(saved_config, config, SPLIT_KEYS)
    if name is not None:
        raise CheckpointError(
            f"{key} '{path}' was trained with {name}={saved_config[name]!r}, this run has "
            f"{name}={config[name]!r}: it saw another split, including this run's test items. "
            f"Set {name} to match, or unset {key} to train the model on this split."
        )
    fingerprint = saved.get("split_fingerprint")
    if fingerprint is not None and fingerprint != split_fingerprint(dataset, parts):
        raise CheckpointError(
            f"{key} '{path}' was trained on other interactions than this run's split (same data "
            f"set name and settings, other files, e.g. another data_path): it may have seen this "
            f"run's test items. Unset {key} to train the model on this split."
        )


def cache_path(config: Config, derived: Config, role: str, fingerprint: str) -> str:
    """``saved/<role>-<Model>-<dataset>-<hash>.pth``: the hash covers the split's contents and
    every setting that changes the model's training or selection."""
    identity = sorted(
        (k, repr(v)) for k, v in derived.final_config_dict.items() if k not in _NOT_IDENTITY
    )
    identity += [(k, repr(config[k])) for k in _SELECTION_KEYS]
    identity.append(("split", fingerprint))
    digest = hashlib.sha1(repr(identity).encode()).hexdigest()[:12]
    name = f"{role}-{derived['model']}-{derived['dataset']}-{digest}.pth"
    return os.path.join(config["checkpoint_dir"], name)


def train_and_cache(config: Config, dataset, parts, role: str) -> Pretrained:
    """Train ``<role>_model`` alone on this run's split, or reuse the cached result."""
    name = config[f"{role}_model"]
    overrides = config[f"{role}_config"] or {}
    derived = derive_config(config, name, overrides, role)
    fingerprint = split_fingerprint(dataset, parts)
    path = cache_path(config, derived, role, fingerprint)
    logger = getLogger()
    # Two runs started together that need the same model take turns: the second waits, then
    # reuses what the first trained. Rank 0 holds the lock for all the ranks of its run.
    waiting = f"Another run is training the same {role}; waiting for it to finish: {path}"
    with locked(path, waiting) if distributed.is_main() else nullcontext():
        if distributed.broadcast_object(os.path.isfile(path)):  # every rank takes rank 0's view
            logger.info(f"Reusing the {role} trained earlier on this split: {path}")
        else:
            logger.info(f"Training the {role} ({name}, {overrides}) on this run's split")
            train_alone(config, derived, dataset, parts, path, fingerprint)
            logger.info(f"Saved the {role}: {path}")
    saved = checkpoint.read(path, f"the cached {role}")
    return Pretrained(role, name, overrides, saved["state_dict"], path)


def train_alone(config: Config, derived: Config, dataset, parts, path: str,
                fingerprint: str) -> None:
    """Train the model of ``derived`` on this run's split and save its best state at ``path``."""
    loaders = make_loaders(derived, dataset, parts, run_config=config)
    train_data, valid_data, _ = loaders
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = initialise(derived.model_class(derived, train_data._dataset), derived)
    model = model.to(derived["device"])
    # Selected under the run's evaluation protocol, like the distilled model will be.
    trainer = create_trainer(config, model, loaders, model_config=derived)
    # Written under a temporary name and renamed when done: an interrupted run never leaves a
    # half-trained model where a later run would take it for a finished one.
    trainer.saved_model_file = path + ".partial"
    # The name covers every setting of this training: a resume point under it is of the same
    # training, cut short, which goes on from there.
    resumable = isinstance(trainer, ResumableTrainer)
    if resumable and distributed.broadcast_object(os.path.isfile(trainer.resume_file)):
        getLogger().info(f"Continuing the interrupted training from {trainer.resume_file}")
        trainer.resume_checkpoint(trainer.resume_file, "the interrupted training")
    trainer.fit(train_data, valid_data, saved=True, show_progress=config["show_progress"])

    def publish():
        best = checkpoint.read(trainer.saved_model_file, f"the {derived['model']} trained alone")
        best["split_fingerprint"] = fingerprint
        checkpoint.atomic_save(best, trainer.saved_model_file)
        os.replace(trainer.saved_model_file, path)

    distributed.written_by_main(publish)
    if resumable:
        trainer.discard_resume_point()
