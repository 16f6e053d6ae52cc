"""Which keys a run accepts, and which values: recbole_kd's own keys, RecBole's keys whose
values RecBole would take but cannot train with, keys of another method, and misspellings."""

from __future__ import annotations

import difflib
import math
import warnings
from typing import Any, Callable

from recbole_kd.distributed import DISTRIBUTED_KEYS
from recbole_kd.errors import KDConfigError, KDConfigWarning
from recbole_kd.properties import common_keys, method_keys, plugin_keys, recbole_keys
from recbole_kd.registry import get_model, is_kd_model

# Prefixes that mark a key as the plugin's: such a key must be one the plugin defines, so a
# misspelling is an error instead of a silently ignored setting.
PLUGIN_PREFIXES = (
    "teacher_", "student_", "de_", "rrd_", "bd_", "kd_", "rd_", "cd_", "dcd_", "htd_"
)


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < math.inf


def _non_negative(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0


def _positive_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def _non_negative_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _unit_interval(x: Any) -> bool:
    return _number(x) and 0 <= x <= 1


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
    "teachers": (lambda v: v is None or _teacher_list(v),
                 ("null, or a list of at least two {model: <name>, config: {...}, "
                  "checkpoint: <path or null>}")),
    "teacher_checkpoint": (_optional_str, "a path to a RecBole checkpoint (.pth) or null"),
    "student_model": (_is_str, "a RecBole general model name"),
    "student_config": (_optional_dict, "a dict of the student's overrides, e.g. {embedding_size: 20}"),
    "student_checkpoint": (_optional_str, "a path to a RecBole checkpoint (.pth) or null"),
    "kd_chunk_size": (_positive_int, "a positive int (users scored at once)"),
    "kd_student_alone": (_is_bool, "true or false"),
    "kd_fused_optimizer": (_is_bool, "true or false"),
    "kd_keep_freed_memory": (_is_bool, "true or false"),
    "kd_flush_denormal": (_is_bool, "true or false"),
    "kd_dist_backend": (lambda v: v in (None, "gloo", "nccl"), "gloo, nccl or ~ (by device)"),
    "kd_dist_timeout": (_positive, "a positive number of minutes"),
    "kd_deterministic": (_optional(_is_bool), "true, false or ~ (= reproducibility)"),
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
    "rd_weight": (_non_negative, "a number >= 0"),
    "rd_top_k": (_positive_int, "a positive int"),
    "rd_position_sharpness": (_positive, "a number > 0"),
    "rd_mu": (_positive, "a number > 0"),
    "rd_dynamic_samples": (_positive_int, "a positive int"),
    "rd_dynamic_start_epoch": (_non_negative_int, "an int >= 0"),
    "rd_weight_renormalize": (_is_bool, "true or false"),
    "rd_rank_offset": (_is_bool, "true or false"),
    "rd_dynamic_per": (_one_of("row", "user"), "row or user"),
    "cd_weight": (_non_negative, "a number >= 0"),
    "cd_guide": (_one_of("student", "teacher", "random"), "student, teacher or random"),
    "cd_redraw_each_epoch": (_optional(_is_bool), "true, false or null (= only for cd_guide student)"),
    "cd_top_n": (_positive_int, "a positive int"),
    "cd_temperature": (_positive, "a number > 0"),
    "cd_samples": (_positive_int, "a positive int"),
    "cd_label_temperature": (_positive, "a number > 0"),
    "cd_label_shift": (_number, "a number"),
    "dcd_weight_user": (_non_negative, "a number >= 0"),
    "dcd_weight_item": (_non_negative, "a number >= 0"),
    "dcd_top_n": (_positive_int, "a positive int"),
    "dcd_eps": (_positive, "a number > 0"),
    "dcd_samples": (_positive_int, "a positive int"),
    "dcd_refresh_epochs": (_positive_int, "a positive int"),
    "dcd_weight_floor": (_non_negative, "a number >= 0"),
    "dcd_rrd_weight": (_non_negative, "a number >= 0"),
    "htd_weight": (_non_negative, "a number >= 0"),
    "htd_alpha": (_unit_interval, "a number in [0, 1]"),
    "htd_num_groups": (_positive_int, "a positive int"),
    "htd_group_level": (_one_of("pe", "pp"), "pe or pp"),
    "htd_entity_mask": (_one_of("reference", "group"), "reference or group"),
    "htd_prototype_grad": (_is_bool, "true or false"),
    "htd_tau_start": (_positive, "a number > 0"),
    "htd_tau_end": (_positive, "a number > 0"),
    "htd_anneal_epochs": (_optional(_positive_int), "a positive int or null (= epochs)"),
}


def _teacher_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) >= 2 and all(
        isinstance(spec, dict) and isinstance(spec.get("model"), str)
        and set(spec) <= {"model", "config", "checkpoint"}
        and _optional_dict(spec.get("config")) and _optional_str(spec.get("checkpoint"))
        for spec in value)


def _positive_ints(x: Any) -> bool:
    values = x if isinstance(x, list) else [x]
    return bool(values) and all(_positive_int(v) for v in values)


# Keys whose impossible values RecBole accepts silently (or fails on deep inside), and the
# plugin's keys that configure a backbone itself: key -> (check, what a valid value is). Also
# checked inside teacher_config / student_config.
VALUE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (_positive_int, "a positive int"),
    "train_batch_size": (_positive_int, "a positive int"),
    "eval_batch_size": (_positive_int, "a positive int"),
    "learning_rate": (_positive, "a number > 0"),
    "weight_decay": (_non_negative, "a number >= 0"),
    "stopping_step": (_positive_int, "a positive int"),
    "eval_step": (_non_negative_int, "an int >= 0 (0: no validation)"),
    "embedding_size": (_positive_int, "a positive int"),
    "topk": (_positive_ints, "a positive int or a list of positive ints"),
    "seed": (lambda x: _non_negative_int(x) and x < 2**32, "an int in [0, 2**32 - 1]"),
    # Model hyper-parameters RecBole builds from without a check (a LightGCN of -1 layers).
    "n_layers": (_non_negative_int, "an int >= 0"),
    "num_layers": (_positive_int, "a positive int"),
    "n_heads": (_positive_int, "a positive int"),
    "hidden_size": (_positive_int, "a positive int"),
    "inner_size": (_positive_int, "a positive int"),
    "mf_embedding_size": (_positive_int, "a positive int"),
    "mlp_embedding_size": (_positive_int, "a positive int"),
    "mlp_hidden_size": (_positive_ints, "a list of positive ints"),
    "MAX_ITEM_LIST_LENGTH": (_positive_int, "a positive int"),
    "dropout_prob": (_unit_interval, "a probability in [0, 1]"),
    "hidden_dropout_prob": (_unit_interval, "a probability in [0, 1]"),
    "attn_dropout_prob": (_unit_interval, "a probability in [0, 1]"),
    "corruption_ratio": (lambda x: _unit_interval(x) and x < 1, "a probability in [0, 1)"),
    "init_std": (_positive, "a number > 0 (std of the N(0, std) embeddings) or null"),
    "init_layers": (lambda v: v == "torch", "torch (PyTorch's own initialisation of every layer) or null"),
    "cdae_negatives": (_positive_int, "an int >= 1 (negatives per training item of a user) or null"),
}


# VALUE_RULES' keys whose null means "the model's own default".
NULLABLE = frozenset({"init_std", "init_layers", "cdae_negatives"})


def method_files(model: str) -> list[str]:
    """The methods whose property files hold ``model``'s defaults, lowest precedence first."""
    if not is_kd_model(model):
        return []
    return [*get_model(model).defaults_from, model]


def settings_for(model: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` without the keys that belong to other methods than ``model`` (e.g. one
    comparison's shared settings for each of its runs)."""
    foreign = foreign_keys(model)
    return {key: value for key, value in settings.items() if key not in foreign}


def foreign_keys(model: str) -> frozenset[str]:
    """The plugin keys of other methods than ``model``'s."""
    return frozenset().union(*method_keys().values()) - own_keys(model)


def own_keys(model: str) -> frozenset[str]:
    """The plugin keys a run of ``model`` accepts: every run's, and its method's."""
    return common_keys().union(*(method_keys().get(name, ()) for name in method_files(model)))


def check_keys(config_dict: dict[str, Any], model: str, user_keys) -> None:
    """Every check of a run's final config; ``user_keys`` are the keys the user set (files,
    dict, command line), which are also looked at for misspellings."""
    check_plugin_keys(config_dict, model)
    check_values(config_dict)
    warn_unknown_keys(user_keys)


def check_values(config_dict: dict[str, Any]) -> None:
    """Refuse impossible values of ``VALUE_RULES``' keys, in the run's config and the role
    configs."""
    places = [("", config_dict)]
    places += [(f"{role}_config.", config_dict.get(f"{role}_config") or {})
               for role in ("teacher", "student")]
    places += [(f"teachers[{i}].config.", spec.get("config") or {})
               for i, spec in enumerate(config_dict.get("teachers") or [])
               if isinstance(spec, dict)]
    for prefix, values in places[1:]:
        check_role_keys(prefix, values)
    for prefix, values in places:
        for key, (check, expected) in VALUE_RULES.items():
            value = values.get(key)
            if key in values and (value is not None or key not in NULLABLE) and not check(value):
                raise KDConfigError(
                    f"Config key '{prefix}{key}' = {values[key]!r} is invalid: expected "
                    f"{expected}."
                )


def check_role_keys(prefix: str, values: dict[str, Any]) -> None:
    """Refuse a key of ``teacher_config`` / ``student_config`` that no RecBole model nor
    recbole_kd defines: the model would be built at its default, without a word."""
    known = recbole_keys() | plugin_keys()
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise KDConfigError(
                f"Config key '{prefix}{key}' is not a setting of RecBole or recbole_kd: the "
                f"model would be built without it.{hint}")


def known_keys() -> frozenset[str]:
    """Every key RecBole or recbole_kd defines."""
    return recbole_keys() | plugin_keys() | {"model", "dataset", "config_files",
                                              "local_rank", *DISTRIBUTED_KEYS}


def warn_unknown_keys(user_keys) -> None:
    """Warn about keys neither RecBole nor recbole_kd defines, naming the closest known key:
    RecBole would ignore them without a word."""
    known = known_keys()
    for key in user_keys:
        if key in known or key.startswith(PLUGIN_PREFIXES):  # the latter are refused instead
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        warnings.warn(
            f"Config key '{key}' is not a RecBole or recbole_kd setting and has no effect.{hint}",
            KDConfigWarning, stacklevel=2,
        )


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
    for prefix in ("de", "htd"):
        if config_dict.get(f"{prefix}_tau_end", 0) > config_dict.get(f"{prefix}_tau_start", 1):
            raise KDConfigError(
                f"{prefix}_tau_end must not exceed {prefix}_tau_start (the temperature decays).")
