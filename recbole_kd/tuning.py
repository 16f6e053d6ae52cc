"""Hyper-parameter search over recbole_kd (and RecBole) models with RecBole's HyperTuning."""

from __future__ import annotations

from logging import getLogger

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
