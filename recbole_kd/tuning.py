"""Hyper-parameter search over recbole_kd (and RecBole) models with RecBole's HyperTuning."""

from __future__ import annotations

import ast
import os
from logging import getLogger

from recbole_kd.errors import KDConfigError
from recbole_kd.quick_start import objective_function


def tune(
    model: str,
    dataset: str,
    params_file: str,
    config_file_list: list[str] | None = None,
    algo: str = "exhaustive",
    max_evals: int = 100,
    early_stop: int = 10,
    output_file: str | None = None,
    config_dict: dict | None = None,
) -> dict:
    """Search ``params_file`` (RecBole's format: ``name choice [..]`` / ``name uniform a,b`` ...)
    for ``model`` on ``dataset``; every trial is a full recbole_kd run selected on validation.

    Returns the best parameters, their validation score and test result. Needs hyperopt
    (``pip install "recbole_kd[tune]"``).
    """
    try:
        from recbole.trainer import HyperTuning
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("Tuning needs hyperopt: pip install 'recbole_kd[tune]'") from error

    check_hyper_file(params_file)
    fixed = {"model": model, "dataset": dataset, **(config_dict or {})}

    def objective(params, fixed_config_file_list):
        return objective_function({**fixed, **params}, fixed_config_file_list)

    search = HyperTuning(
        objective, params_file=params_file, fixed_config_file_list=config_file_list,
        algo=algo, max_evals=max_evals, early_stop=early_stop,
    )
    search.run()
    if output_file:
        search.export_result(output_file=output_file)
    best = search.params2result[search.params2str(search.best_params)]
    getLogger().info(f"best params: {search.best_params}; test result: {best['test_result']}")
    return {"best_params": search.best_params, "best_valid_score": search.best_score,
            "test_result": best["test_result"]}


# RecBole's parameter types and how many numbers each takes after it.
_RANGES = {"uniform": 2, "loguniform": 2, "quniform": 3}


def check_hyper_file(path: str) -> None:
    """Refuse a ``--hyper`` file RecBole's HyperTuning would fail on (or misread), naming the
    line: each line is ``name choice [v1, v2, ...]`` or ``name uniform|loguniform low,high`` or
    ``name quniform low,high,q``."""
    if not os.path.isfile(path):
        raise KDConfigError(f"--hyper file '{path}' does not exist: check the path.")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    form = ("is not 'name choice [v1, v2]', 'name uniform low,high', 'name loguniform "
            "low,high' or 'name quniform low,high,q'")
    for number, line in enumerate(lines, 1):
        words = line.strip().split(" ")
        if len(words) < 3:
            continue  # RecBole skips such lines
        kind, value = words[1], "".join(words[2:])
        where = f"--hyper file '{path}', line {number} ({line.strip()!r})"
        if kind == "choice":
            try:
                values = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise KDConfigError(f"{where}: the choices are not a list of values, e.g. "
                                    "[0.001, 0.01].") from None
            if not isinstance(values, list) or not values:
                raise KDConfigError(f"{where}: the choices must be a non-empty list.")
        elif kind in _RANGES:
            numbers = value.split(",")
            try:
                bounds = [float(n) for n in numbers]
            except ValueError:
                bounds = []
            if len(bounds) != _RANGES[kind] or bounds[0] >= bounds[1]:
                raise KDConfigError(f"{where}: {kind} takes {_RANGES[kind]} numbers separated "
                                    "by commas, low < high.")
        else:
            raise KDConfigError(f"{where} {form}.")
