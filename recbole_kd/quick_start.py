"""Runners in the style of RecBole's quick start, for recbole_kd and RecBole models alike."""

from __future__ import annotations

import logging
import os
import sys
from logging import getLogger

import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_logger, init_seed, set_color

from recbole_kd.config import KDConfig
from recbole_kd.data import build_split, make_loaders
from recbole_kd.protocol import create_trainer
from recbole_kd.summary import evaluate_alone, format_summary
from recbole_kd.teacher import resolve_pretrained
from recbole_kd.utils import get_model, is_kd_model


def build(config: KDConfig):
    """Loaders over the split and the model of ``config``, with its teacher's weights in place."""
    dataset, parts = build_split(config)
    train_data, valid_data, test_data = make_loaders(config, dataset, parts)
    model_class = get_model(config["model"])
    alone = {}  # models trained alone on this split, by role
    if is_kd_model(config["model"]):
        model_class.check_backbones(config)
        roles = list(model_class.pretrained_roles)
        if config["kd_student_alone"] and "student" not in roles:
            roles.append("student")
        for role in roles:
            alone[role] = resolve_pretrained(config, dataset, parts, role)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = model_class(config, train_data._dataset).to(config["device"])
    if is_kd_model(config["model"]):
        for role in model_class.pretrained_roles:
            model.load_pretrained(role, alone[role])
        model.alone_states = alone  # for the end-of-run summary
    return train_data, valid_data, test_data, model


def export_path(saved_model_file: str, role: str) -> str:
    """``saved/DERRD-<time>.pth`` -> ``saved/DERRD-<time>-student.pth``."""
    root, _ = os.path.splitext(saved_model_file)
    return f"{root}-{role}.pth"


def train_and_test(config: KDConfig, saved: bool = True, verbose: bool = True):
    """Train, evaluate on test and (for distillation models) export the student."""
    logger = getLogger()
    train_data, valid_data, test_data, model = build(config)
    if verbose:
        logger.info(model)
    trainer = create_trainer(config, model, (train_data, valid_data, test_data))
    if config["kd_resume"]:
        trainer.resume_checkpoint(config["kd_resume"])
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, verbose=verbose, saved=saved, show_progress=config["show_progress"]
    )
    test_result = trainer.evaluate(
        test_data, load_best_model=saved, show_progress=config["show_progress"]
    )
    result = {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }
    if saved:
        result["saved_model_file"] = trainer.saved_model_file
    result.update(getattr(trainer, "teacher_results", {}))
    if is_kd_model(config["model"]):
        result.update(evaluate_alone(trainer, test_data, model.alone_states))
        logger.info(format_summary(config, result))
        for role in model.exported_roles if saved else ():
            path = model.export(role, export_path(trainer.saved_model_file, role))
            result[f"{role}_file"] = path
            logger.info(set_color(f"{role.capitalize()} exported for RecBole", "yellow") + f": {path}")
    return result


def run_recbole_kd(
    model: str | None = None,
    dataset: str | None = None,
    config_file_list: list[str] | None = None,
    config_dict: dict | None = None,
    saved: bool = True,
) -> dict:
    """Train and test ``model`` (a recbole_kd or RecBole model) on ``dataset``.

    Returns RecBole's result dict (best_valid_score, valid_score_bigger, best_valid_result,
    test_result), plus ``saved_model_file`` and, for distillation models, ``student_file``: the
    student as a plain RecBole checkpoint.
    """
    config = KDConfig(model, dataset, config_file_list, config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)
    result = train_and_test(config, saved=saved)
    logger.info(set_color("best valid ", "yellow") + f": {result['best_valid_result']}")
    logger.info(set_color("test result", "yellow") + f": {result['test_result']}")
    return result


def objective_function(config_dict=None, config_file_list=None, saved=True) -> dict:
    """The objective for RecBole's HyperTuning, for recbole_kd and RecBole models."""
    config = KDConfig(config_dict=config_dict, config_file_list=config_file_list)
    init_seed(config["seed"], config["reproducibility"])
    logger = getLogger()
    for handler in logger.handlers[:]:
        logger.removeHandler(handler)
    init_logger(config)
    logging.basicConfig(level=logging.ERROR)
    result = train_and_test(config, saved=saved, verbose=False)
    result["model"] = config["model"]
    return result


def load_data_and_model(model_file: str):
    """Load a recbole_kd (or RecBole) checkpoint: config, model, dataset and the three loaders."""
    checkpoint = torch.load(model_file, map_location="cpu", weights_only=False)
    config = checkpoint["config"]
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data
