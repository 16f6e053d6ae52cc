"""Checks of RecBole's evaluation settings that RecBole makes late, with a traceback, or never:
metric names, the validation metric, the split ratios. Run on the final config, before any
data is read or model trained."""

from __future__ import annotations

import difflib
import warnings
from typing import Any

from recbole.evaluator import metric_types

from recbole_kd.errors import KDConfigError, KDConfigWarning


def check_evaluation(config_dict: dict[str, Any]) -> None:
    """Every check of this module on a run's final config."""
    check_metrics(config_dict)
    check_split_ratios(config_dict)
    check_load_col(config_dict)


def check_load_col(config_dict: dict[str, Any]) -> None:
    """``load_col``: null, or a dict of lists of column names whose ``inter`` list holds the user
    and item fields (RecBole fails deep inside on anything else)."""
    load_col = config_dict.get("load_col")
    if load_col is None:
        return
    fields = [config_dict.get("USER_ID_FIELD"), config_dict.get("ITEM_ID_FIELD")]
    example = f"{{inter: [{', '.join(map(str, fields))}]}}"
    if not isinstance(load_col, dict) or not all(
            isinstance(columns, list) and all(isinstance(c, str) for c in columns)
            for columns in load_col.values()):
        raise KDConfigError(f"load_col {load_col!r}: expected a dict of column-name lists, e.g. "
                            f"{example}, or null for every column.")
    missing = [field for field in fields if field not in load_col.get("inter", [])]
    if missing:
        raise KDConfigError(f"load_col {load_col!r} leaves out {', '.join(missing)}: the "
                            f"interactions need them, e.g. {example}.")


def check_metrics(config_dict: dict[str, Any]) -> None:
    """Metric names RecBole knows; ``valid_metric`` among ``metrics``, at a cut-off of
    ``topk``: RecBole finds a wrong one only after the models trained."""
    metrics = config_dict.get("metrics")
    metrics = [metrics] if isinstance(metrics, str) else metrics
    if not isinstance(metrics, list) or not metrics:
        raise KDConfigError(f"metrics {config_dict.get('metrics')!r}: expected a list of RecBole "
                            "metric names, e.g. ['Recall', 'NDCG'].")
    for metric in metrics:
        if not isinstance(metric, str) or metric.lower() not in metric_types:
            close = difflib.get_close_matches(str(metric).lower(), sorted(metric_types), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise KDConfigError(f"metrics: RecBole has no metric named '{metric}'.{hint}")
    valid = config_dict.get("valid_metric")
    if not isinstance(valid, str) or not valid:
        raise KDConfigError(f"valid_metric {valid!r}: expected a metric of metrics at a cut-off "
                            "of topk, e.g. MRR@10.")
    name, _, cutoff = valid.partition("@")
    if name.lower() not in {m.lower() for m in metrics}:
        raise KDConfigError(
            f"valid_metric '{valid}' is not among metrics {metrics}: add {name} to metrics, "
            "or choose a valid_metric among them.")
    topk = config_dict.get("topk")
    topk = [topk] if isinstance(topk, int) else list(topk or [])
    if cutoff and metric_types[name.lower()] == metric_types["ndcg"] and (
            not cutoff.isdigit() or int(cutoff) not in topk):
        raise KDConfigError(
            f"valid_metric '{valid}' asks for the cut-off {cutoff}, which topk {topk} does not "
            f"compute: add {cutoff} to topk, or choose valid_metric among "
            f"{', '.join(f'{name}@{k}' for k in topk)}.")


def check_split_ratios(config_dict: dict[str, Any]) -> None:
    """``eval_args.split.RS`` ratios: none negative, not all zero; RecBole divides them by
    their sum, which is said when it is not 1."""
    eval_args = config_dict.get("eval_args")
    if not isinstance(eval_args, dict):
        raise KDConfigError(
            f"eval_args {eval_args!r}: expected a dict, e.g. {{split: {{RS: [0.8, 0.1, 0.1]}}, "
            "order: RO, group_by: user, mode: full}.")
    split = (eval_args or {}).get("split") or {}
    ratios = split.get("RS") if isinstance(split, dict) else None
    if ratios is None:
        return
    if not isinstance(ratios, list) or not all(
            isinstance(r, (int, float)) and not isinstance(r, bool) for r in ratios):
        raise KDConfigError(f"eval_args split RS {ratios!r}: expected a list of numbers, e.g. "
                            "[0.8, 0.1, 0.1] (train, validation, test).")
    if any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise KDConfigError(
            f"eval_args split RS {ratios}: ratios must be >= 0 and not all 0, e.g. "
            "[0.8, 0.1, 0.1] (train, validation, test).")
    total = sum(ratios)
    if abs(total - 1) > 1e-9:
        scaled = [round(r / total, 4) for r in ratios]
        warnings.warn(f"eval_args split RS {ratios} sums to {total:g}, not 1: RecBole divides "
                      f"them by their sum, {scaled}.", KDConfigWarning, stacklevel=2)
