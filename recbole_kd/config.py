"""KDConfig: RecBole's Config plus the plugin's property files, model lookup and key checks."""

from __future__ import annotations

import copy
import os
from typing import Any

import yaml
from recbole.config import Config
from recbole.utils import ModelType

from recbole_kd import determinism, distributed
from recbole_kd.errors import KDConfigError
from recbole_kd.eval_protocol import check_eval_protocol
from recbole_kd.evaluation_checks import check_evaluation
from recbole_kd.key_checks import check_keys, foreign_keys, method_files
from recbole_kd.model.role_config import recbole_model
from recbole_kd.model.sequential_backbone import is_sequential
from recbole_kd.properties import model_file, properties_dir, read_yaml
from recbole_kd.registry import get_model, is_kd_model


def student_family(model_class: type, external: dict) -> type | None:
    """For a distillation model with a sequential student: a stand-in class of the
    sequential type that RecBole's default loading reads (``type``); else None."""
    if not is_kd_model(model_class.__name__):
        return None
    student = external.get("student_model") or read_yaml(
        os.path.join(properties_dir(), "overall.yaml")).get("student_model")
    try:
        student_class = recbole_model(str(student), "")
    except KDConfigError:
        return None  # named in the checks that follow
    if not is_sequential(student_class):
        return None
    return type(model_class.__name__, (), {"type": ModelType.SEQUENTIAL})


# RecBole's default negative sampling: one item per row, uniformly.
ONE_NEGATIVE = {"distribution": "uniform", "sample_num": 1, "alpha": 1.0, "dynamic": False,
                "candidate_num": 0}


class KDConfig(Config):
    """RecBole's Config that also reads recbole_kd's property files and finds its models.

    Precedence, lowest first: RecBole's defaults, recbole_kd's ``properties/overall.yaml``,
    ``properties/model/<Model>.yaml`` and ``properties/datasets/<dataset>.yaml``, then config
    files, the config dict and the command line.
    """

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise KDConfigError("model must be given: as an argument, in a config file or --model")
        if isinstance(model, str):
            model_class = get_model(model)
        else:
            model_class, model = model, model.__name__
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise KDConfigError(
                    "dataset must be given: as an argument, in a config file or --dataset")
        return model, model_class, dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        # A distillation run is of its student's family: RecBole then builds a sequential
        # data set, its defaults (leave-one-out by time) and loaders for a sequential student.
        family = student_family(model_class, self.external_config_dict)
        super()._load_internal_config_dict(model, family or model_class, dataset)
        paths = [os.path.join(properties_dir(), "overall.yaml")]
        paths += [model_file(name) for name in method_files(model)]
        paths.append(os.path.join(properties_dir(), "datasets", f"{dataset}.yaml"))
        for path in paths:
            if os.path.isfile(path):
                self._update_internal_config_dict(path)

    def _load_config_files(self, file_list):
        """RecBole's reading of config files, with errors that name the file."""
        values = {}
        for path in file_list or []:
            if not os.path.isfile(path):
                raise KDConfigError(f"Config file '{path}' does not exist: check the path.")
            with open(path, encoding="utf-8") as f:
                try:
                    loaded = yaml.load(f.read(), Loader=self.yaml_loader)
                except UnicodeDecodeError as error:
                    raise KDConfigError(
                        f"Config file '{path}' is not UTF-8 text ({error.reason} at byte "
                        f"{error.start}): save it as UTF-8.") from None
                except yaml.YAMLError as error:
                    message = " ".join(str(error).replace("<unicode string>", path).split())
                    raise KDConfigError(f"Config file '{path}' is not valid YAML: {message}") \
                        from None
            if loaded is not None and not isinstance(loaded, dict):
                raise KDConfigError(f"Config file '{path}' must hold 'key: value' lines.")
            values.update(loaded or {})
        return values

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        # One property file may set up several runs (a reference setup: the models trained
        # alone and BD): a run leaves the other methods' keys of its files to them. Set in the
        # run's own dict or command line, such a key is still refused.
        direct = self.variable_config_dict.keys() | self.cmd_config_dict.keys()
        for key in foreign_keys(self.model) & (self.file_config_dict.keys() - direct):
            del final[key]
        check_keys(final, self.model, self.external_config_dict)
        check_evaluation(final)
        if final.get("MODEL_TYPE") == ModelType.SEQUENTIAL:
            self._sequential_negatives(final)
        return final

    def _sequential_negatives(self, final: dict) -> None:
        """Negative sampling of a sequential run, where RecBole would refuse its own defaults
        (a CE model, such as SASRec, with one sampled negative per row): a sequential model
        with CE trains without negatives, as RecBole trains it, unless the user set them; a
        distillation run draws one per row (the methods that read a negative need it, a CE
        student's own loss ignores it)."""
        if is_kd_model(self.model):
            if final.get("train_neg_sample_args") is None:
                final["train_neg_sample_args"] = dict(ONE_NEGATIVE)
        elif final.get("loss_type") == "CE" and "train_neg_sample_args" not in \
                self.external_config_dict:
            final["train_neg_sample_args"] = None

    def _set_default_parameters(self):
        super()._set_default_parameters()
        check_eval_protocol(self.final_config_dict)  # only now is eval_args complete

    def _init_device(self):
        if not distributed.requested(self.final_config_dict):
            super()._init_device()
            determinism.apply(self.final_config_dict)
            return
        # RecBole's gpu_id handling (CUDA_VISIBLE_DEVICES), then the package's process group.
        local_rank = self.final_config_dict.pop("local_rank", None)
        super()._init_device()
        del self.final_config_dict["local_rank"]  # set by torchrun's variables when not given
        if local_rank is not None:
            self.final_config_dict["local_rank"] = local_rank
        distributed.init_process(self.final_config_dict)
        determinism.apply(self.final_config_dict)

    def with_values(self, **values: Any) -> KDConfig:
        """A copy of this config with ``values`` set; this one is left as it is."""
        changed = copy.copy(self)
        changed.final_config_dict = {**copy.deepcopy(self.final_config_dict), **values}
        return changed
