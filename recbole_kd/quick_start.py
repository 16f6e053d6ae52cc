"""Runners in the style of RecBole's quick start, for recbole_kd and RecBole models alike."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from functools import partial
from logging import getLogger

import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_logger, init_seed, set_color

from recbole_kd import checkpoint, distributed
from recbole_kd.config import KDConfig
from recbole_kd.data import build_split, make_loaders
from recbole_kd.errors import CheckpointError, KDConfigError
from recbole_kd.model.init import initialise
from recbole_kd.pretrained import SPLIT_KEYS, Pretrained, first_difference, resolve_pretrained
from recbole_kd.registry import get_model, is_kd_model
from recbole_kd.run_log import init_run_logger
from recbole_kd.summary import format_summary
from recbole_kd.trainer.factory import create_trainer
from recbole_kd.trainer.resumable import check_same_device_type


@dataclass
class RunState:
    """What a prepared run trains with.

    ``config`` is the run's config with the pretrained models' names and hyper-parameters filled
    in (the config given to :func:`prepare_run` is left as it is); ``pretrained`` holds the models
    trained (or loaded) before distillation, by role.
    """

    config: KDConfig
    train_data: object
    valid_data: object
    test_data: object
    model: object
    pretrained: dict[str, Pretrained] = field(default_factory=dict)

    @property
    def loaders(self) -> tuple:
        return self.train_data, self.valid_data, self.test_data

    def take_pretrained_states(self) -> dict[str, dict]:
        """The weights of the models trained before distillation, by role, dropped from here."""
        states = {role: spec.state_dict for role, spec in self.pretrained.items()}
        for spec in self.pretrained.values():
            spec.state_dict = None
        return states


def pretrained_roles(config: KDConfig, model_class: type) -> list[str]:
    """The roles trained or loaded before distillation: the method's, and with
    ``kd_student_alone`` the student too (for the summary)."""
    roles = list(model_class.pretrained_roles)
    if config["kd_student_alone"] and "student" not in roles:
        roles.append("student")
    return roles


def prepare_run(config: KDConfig) -> RunState:
    """The split, its loaders, the models trained before distillation and the run's model."""
    model_class = get_model(config["model"])
    if is_kd_model(config["model"]):
        check_models(config, model_class)  # before anything is read or trained
    dataset, parts = build_split(config)
    pretrained = {}
    if is_kd_model(config["model"]):
        roles = pretrained_roles(config, model_class)
        for role in roles:
            if role == "teacher" and config["teachers"] is not None:
                pretrained[role], teachers = resolve_teachers(config, dataset, parts)
                config = config.with_values(teachers=teachers)
                continue
            pretrained[role] = resolve_pretrained(config, dataset, parts, role)
            if not config[f"{role}_model"]:  # named by its checkpoint
                model_class.check_backbone(role, pretrained[role].model)
            config = config.with_values(**{f"{role}_model": pretrained[role].model,
                                           f"{role}_config": pretrained[role].config})
    user_batches = is_kd_model(config["model"]) and model_class.trains_on_user_batches(config)
    train_data, valid_data, test_data = make_loaders(config, dataset, parts,
                                                     user_batches=user_batches)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = model_class(config, train_data._dataset)
    if not is_kd_model(config["model"]):  # a KD model initialises its own backbones
        initialise(model, config)
    model = model.to(config["device"])
    if is_kd_model(config["model"]):
        for role in model_class.pretrained_roles:
            load_pretrained_weights(model, pretrained[role])
    return RunState(config, train_data, valid_data, test_data, model, pretrained)


def check_models(config: KDConfig, model_class: type) -> None:
    """The teacher (or each of several teachers) and the student, refused before anything is
    read or trained where the method cannot use them."""
    model_class.check_teachers(config)
    teachers = [spec["model"] for spec in config["teachers"] or []] or [config["teacher_model"]]
    for teacher in filter(None, teachers):
        model_class.check_backbone("teacher", teacher)
    if config["student_model"]:
        model_class.check_backbone("student", config["student_model"])
        for teacher in filter(None, teachers):
            model_class.check_pair(teacher, config["student_model"])


def resolve_teachers(config: KDConfig, dataset, parts) -> tuple[Pretrained, list[dict]]:
    """Each of several teachers trained alone on this split (cached) or read from its
    checkpoint and checked, as a single teacher is; returned as one model whose weights are
    the ensemble's (``members.<i>.*``), and the teachers' resolved specs."""
    members, specs = [], []
    for spec in config["teachers"]:
        one = config.with_values(teacher_model=spec["model"],
                                 teacher_config=spec.get("config") or {},
                                 teacher_checkpoint=spec.get("checkpoint"))
        member = resolve_pretrained(one, dataset, parts, "teacher")
        members.append(member)
        specs.append({"model": member.model, "config": member.config})
    weights = {f"members.{i}.{key}": value for i, member in enumerate(members)
               for key, value in member.state_dict.items()}
    name = f"Ensemble({', '.join(member.model for member in members)})"
    path = ", ".join(member.path for member in members)
    return Pretrained("teacher", name, {}, weights, path), specs


def load_pretrained_weights(model, spec: Pretrained) -> None:
    """Load a model trained before distillation, refusing weights of other sizes than this
    run's model (a checkpoint of another data set under the same name, other settings)."""
    try:
        model.load_pretrained(spec.role, spec.state_dict)
    except RuntimeError as error:
        mismatch = next((line.strip() for line in str(error).splitlines() if "size" in line),
                        str(error).splitlines()[0])
        raise CheckpointError(
            f"{spec.role}_checkpoint '{spec.path}' holds weights of other sizes than this run's "
            f"{spec.model} ({mismatch}): it was trained on other user or item counts (another "
            f"data set under this name) or with other hyper-parameters. Unset "
            f"{spec.role}_checkpoint to train the {spec.role} on this split.") from None


def read_resume_point(config: KDConfig) -> dict:
    """The resume point ``kd_resume``, refused unless it is of this command's run: the same
    model, data set, split and seed (another run's would be continued, and overwritten)."""
    path = config["kd_resume"]
    saved = checkpoint.read(path, "kd_resume", kinds=("resume",))
    saved_config = saved["config"]
    key = first_difference(saved_config, config, ("model", "dataset", *SPLIT_KEYS))
    if key is not None:
        raise CheckpointError(
            f"kd_resume '{path}' is a resume point of a run with {key}={saved_config[key]!r}, "
            f"this command has {key}={config[key]!r}: resume with that run's settings, or "
            "unset kd_resume to start a new run."
        )
    check_same_device_type(saved, torch.device(config["device"]), path)
    return saved


def export_path(saved_model_file: str, role: str) -> str:
    """``saved/DERRD-<time>.pth`` -> ``saved/DERRD-<time>-student.pth``."""
    root, _ = os.path.splitext(saved_model_file)
    return f"{root}-{role}.pth"


def train_and_test(config: KDConfig, saved: bool = True, verbose: bool = True) -> dict:
    """Train, evaluate on test and (for distillation models) export the student."""
    logger = getLogger()
    resume_point = read_resume_point(config) if config["kd_resume"] else None
    run = prepare_run(config)
    config, model = run.config, run.model
    if verbose:
        logger.info(model)
    trainer = create_trainer(config, model, run.loaders)
    if resume_point is not None:
        trainer.resume_from(resume_point)
    resumed_finished = bool(resume_point and resume_point.get("finished"))
    # The models trained alone are fixed: tested now, their weights need not be kept (a
    # released teacher then lives in its checkpoint alone).
    alone = {}
    if is_kd_model(config["model"]):
        alone = trainer.evaluate_alone(run.test_data, run.take_pretrained_states())
    best_valid_score, _ = trainer.fit(
        run.train_data, run.valid_data, verbose=verbose, saved=saved,
        show_progress=config["show_progress"],
    )
    if not is_kd_model(config["model"]):
        test_result = trainer.evaluate(run.test_data, load_best_model=saved,
                                       show_progress=config["show_progress"])
        result = {"best_valid_score": best_valid_score,
                  "valid_score_bigger": config["valid_metric_bigger"],
                  "best_valid_result": trainer.best_valid_result, "test_result": test_result}
        if saved:
            result["saved_model_file"] = trainer.saved_model_file
        return result
    tests = trainer.evaluate_roles(run.test_data, load_best_model=saved,
                                   show_progress=config["show_progress"])
    valids = trainer.best_valid_results()
    result = {"best_valid_score": best_valid_score,
              "valid_score_bigger": config["valid_metric_bigger"],
              "best_valid_result": valids["student"], "test_result": tests["student"]}
    if "teacher" in tests:
        result["teacher_best_valid_result"] = valids["teacher"]
        result["teacher_test_result"] = tests["teacher"]
    result.update({f"{role}_alone_test_result": value for role, value in alone.items()})
    logger.info(format_summary(config, result))
    if saved:
        result["saved_model_file"] = trainer.saved_model_file
        for role in model.exported_roles:
            result[f"{role}_file"] = export(model, role, trainer, resumed_finished)
    return result


def export(model, role: str, trainer, resumed_finished: bool) -> str:
    """Export the ``role`` model of a trained run; a finished run resumed keeps the exports it
    already wrote (a run killed during its exports writes only those it lacks)."""
    path = export_path(trainer.saved_model_file, role)
    if resumed_finished and os.path.isfile(path):
        getLogger().info(set_color(f"{role.capitalize()} exported earlier", "yellow") + f": {path}")
        return path
    distributed.written_by_main(lambda: model.export(role, path))
    getLogger().info(set_color(f"{role.capitalize()} exported for RecBole", "yellow") + f": {path}")
    return path


def run_recbole_kd(
    model: str | None = None,
    dataset: str | None = None,
    config_file_list: list[str] | None = None,
    config_dict: dict | None = None,
    saved: bool = True,
    nproc: int = 1,
    world_size: int = -1,
    ip: str = "localhost",
    port: str | int = "5678",
    group_offset: int = 0,
) -> dict:
    """Train and test ``model`` (a recbole_kd or RecBole model) on ``dataset``.

    Returns RecBole's result dict (best_valid_score, valid_score_bigger, best_valid_result,
    test_result), plus ``saved_model_file`` and, for distillation models, ``student_file``: the
    student as a plain RecBole checkpoint (BD: ``teacher_file`` too, and the teacher's metrics).

    ``nproc`` > 1 (or ``world_size`` > 0) runs it in ``nproc`` processes on this machine, ranks
    ``group_offset`` on of a ``world_size``-rank group that meets at ``ip``:``port``, as
    RecBole's ``run_recboles`` does (gloo on CPU, NCCL on CUDA); rank 0's result is returned.
    """
    if nproc != 1 or world_size > 0:
        return spawn_run(model, dataset, config_file_list, config_dict, saved,
                         nproc, world_size, ip, port, group_offset)
    config = KDConfig(model, dataset, config_file_list, config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_run_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)
    result = train_and_test(config, saved=saved)
    logger.info(set_color("best valid ", "yellow") + f": {result['best_valid_result']}")
    logger.info(set_color("test result", "yellow") + f": {result['test_result']}")
    distributed.end_process()
    return result


def spawn_run(model, dataset, config_file_list, config_dict, saved, nproc, world_size, ip, port,
              group_offset) -> dict:
    """:func:`run_recbole_kd` in ``nproc`` processes; its settings are checked here first, so
    that a mistake is reported once (each machine's first rank then makes the run's folders,
    see :func:`recbole_kd.distributed.init_process`)."""
    config = KDConfig(model, dataset, config_file_list, dict(config_dict or {}))
    on_cuda, _ = distributed.backend_of(config.final_config_dict)
    cores = os.cpu_count() or 1
    if not on_cuda and nproc > cores:
        raise KDConfigError(
            f"--nproc {nproc}: this machine has {cores} CPU core(s), and each process of a run "
            f"on CPU needs one (and a copy of the data): use --nproc {cores} or fewer.")
    return distributed.spawn(
        partial(run_recbole_kd, saved=saved), nproc, world_size, ip, port, group_offset,
        dict(config_dict or {}), args=(config["model"], config["dataset"], config_file_list))


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
    saved = checkpoint.read(model_file, "model_file", kinds=checkpoint.KINDS)
    config = saved["config"]
    init_seed(config["seed"], config["reproducibility"])
    init_run_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict(saved["state_dict"])
    model.load_other_parameter(saved.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data
