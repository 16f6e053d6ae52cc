"""KDConfig: RecBole's Config plus the plugin's property files, model lookup and key checks."""

from __future__ import annotations

import copy
import difflib
import os
from typing import Any, Callable

from recbole.config import Config

from recbole_kd.errors import KDConfigError
from recbole_kd.eval_protocol import check_eval_protocol
from recbole_kd.properties import common_keys, method_keys, model_file, properties_dir
from recbole_kd.registry import get_model, is_kd_model

# Prefixes that mark a key as the plugin's: such a key must be one the plugin defines, so a
# misspelling is an error instead of a silently ignored setting.
PLUGIN_PREFIXES = ("teacher_", "student_", "de_", "rrd_", "bd_", "kd_")


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def _non_negative(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0


def _positive_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def _is_bool(x: Any) -> bool:
    return isinstance(x, bool)


def _is_str(x: Any) -> bool:
    return isinstance(x, str)


def _optional_str(x: Any) -> bool:
    return x is None or isinstance(x, str)


def _optional_dict(x: Any) -> bool:
    return x is None or isinstance(x, dict)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda x: x is None or check(x)


def _one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda x: x in choices


# key -> (check, what a valid value is)
KEY_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "teacher_model": (_optional_str, "a RecBole general model name, e.g. BPR"),
    "teacher_config": (_optional_dict, "a dict of the teacher's overrides, e.g. {embedding_size: 200}"),
    "teacher_checkpoint": (_optional_str, "a path to a RecBole checkpoint (.pth) or null"),
    "student_model": (_is_str, "a RecBole general model name"),
    "student_config": (_optional_dict, "a dict of the student's overrides, e.g. {embedding_size: 20}"),
    "student_checkpoint": (_optional_str, "a path to a RecBole checkpoint (.pth) or null"),
    "init_std": (_optional(_positive), "a number > 0 (std of the N(0, std) embeddings) or null"),
    "kd_chunk_size": (_positive_int, "a positive int (users scored at once)"),
    "kd_student_alone": (_is_bool, "true or false"),
    "kd_fused_optimizer": (_is_bool, "true or false"),
    "kd_keep_freed_memory": (_is_bool, "true or false"),
    "kd_resume": (_optional_str, "the '-last.pth' (or BD) checkpoint of a run to continue"),
    "de_weight": (_non_negative, "a number >= 0"),
    "de_num_experts": (_positive_int, "a positive int"),
    "de_tau_start": (_positive, "a number > 0"),
    "de_tau_end": (_positive, "a number > 0"),
    "de_anneal_epochs": (_optional(_positive_int), "a positive int or null (= epochs)"),
    "rrd_weight": (_non_negative, "a number >= 0"),
    "rrd_top_n": (_positive_int, "a positive int"),
    "rrd_interesting": (_positive_int, "a positive int"),
    "rrd_uninteresting": (_positive_int, "a positive int"),
    "rrd_temperature": (_positive, "a number > 0"),
    "rrd_subsample": (_is_bool, "true or false"),
    "bd_weight_teacher": (_non_negative, "a number >= 0"),
    "bd_weight_student": (_non_negative, "a number >= 0"),
    "bd_tau": (_positive, "a number > 0"),
    "bd_eps_teacher": (_positive, "a number > 0"),
    "bd_eps_student": (_positive, "a number > 0"),
    "bd_update_epochs": (_positive_int, "a positive int"),
    "bd_items_per_positive": (_positive_int, "a positive int"),
    "bd_rank_convention": (_one_of("paper", "reference_code"), "paper or reference_code"),
    "bd_positives": (_one_of("exclude", "score_zero"), "exclude or score_zero"),
    "bd_sampled_as_negative": (_is_bool, "true or false"),
    "teacher_learning_rate": (_optional(_positive), "a number > 0 or null (= learning_rate)"),
    "teacher_weight_decay": (_optional(_non_negative), "a number >= 0 or null (= weight_decay)"),
    "student_learning_rate": (_optional(_positive), "a number > 0 or null (= learning_rate)"),
    "student_weight_decay": (_optional(_non_negative), "a number >= 0 or null (= weight_decay)"),
    "kd_eval_protocol": (_one_of("full", "fixed_sampled"), "full or fixed_sampled"),
    "kd_eval_negatives": (_positive_int, "a positive int (negatives per user)"),
}


def method_files(model: str) -> list[str]:
    """The methods whose property files hold ``model``'s defaults, lowest precedence first."""
    if not is_kd_model(model):
        return []
    return [*get_model(model).defaults_from, model]


def settings_for(model: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` without the keys that belong to other methods than ``model`` (e.g. one
    comparison's shared settings for each of its runs)."""
    own = own_keys(model)
    foreign = set().union(*method_keys().values()) - own
    return {key: value for key, value in settings.items() if key not in foreign}


def own_keys(model: str) -> frozenset[str]:
    """The plugin keys a run of ``model`` accepts: every run's, and its method's."""
    return common_keys().union(*(method_keys().get(name, ()) for name in method_files(model)))


def check_plugin_keys(config_dict: dict[str, Any], model: str) -> None:
    """Reject misspelled plugin keys, keys of another method and out-of-range values, naming the
    key and the fix."""
    own = own_keys(model)
    for key, value in config_dict.items():
        owners = [name for name, keys in method_keys().items() if key in keys]
        if key in KEY_RULES and key not in own and owners:
            raise KDConfigError(
                f"Config key '{key}' belongs to {' and '.join(owners)}, not to {model}: remove it "
                f"from this run's settings, or run {owners[0]}."
            )
        if key in KEY_RULES:
            check, expected = KEY_RULES[key]
            if not check(value):
                raise KDConfigError(f"Config key '{key}' = {value!r} is invalid: expected {expected}.")
        elif key.startswith(PLUGIN_PREFIXES):
            close = difflib.get_close_matches(key, list(KEY_RULES), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise KDConfigError(f"Unknown recbole_kd config key '{key}'.{hint}")
    if config_dict.get("de_tau_end", 0) > config_dict.get("de_tau_start", 1):
        raise KDConfigError("de_tau_end must not exceed de_tau_start (the temperature decays).")


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
                raise KeyError("model must be given: as an argument, in a config file or --model")
        if isinstance(model, str):
            model_class = get_model(model)
        else:
            model_class, model = model, model.__name__
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise KeyError("dataset must be given: as an argument, in a config file or --dataset")
        return model, model_class, dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        paths = [os.path.join(properties_dir(), "overall.yaml")]
        paths += [model_file(name) for name in method_files(model)]
        paths.append(os.path.join(properties_dir(), "datasets", f"{dataset}.yaml"))
        for path in paths:
            if os.path.isfile(path):
                self._update_internal_config_dict(path)

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        check_plugin_keys(final, self.model)
        return final

    def _set_default_parameters(self):
        super()._set_default_parameters()
        check_eval_protocol(self.final_config_dict)  # only now is eval_args complete

    def with_values(self, **values: Any) -> KDConfig:
        """A copy of this config with ``values`` set; this one is left as it is."""
        changed = copy.copy(self)
        changed.final_config_dict = {**copy.deepcopy(self.final_config_dict), **values}
        return changed
