"""Side-by-side comparison: RecBole baselines and every distillation method, same split and seeds.

    python run_recbole_kd.py --compare -d ml-100k --config_files bpr200-bpr20 --seeds 3

For each seed: the pair's teacher and student trained alone, RecBole baselines (unmodified), then
DE, RRD and DERRD distilling the teacher trained alone, and BD starting from both models trained
alone. Writes ``comparison.md`` (mean ± std over seeds), ``runs.csv`` (one row per run) and
``comparison.png`` (bar chart) into the results folder (:mod:`recbole_kd.tools.result_store`,
:mod:`recbole_kd.tools.report`); the same command started again after an interruption trains only
the runs it lacks, and continues a distillation run cut short from its resume point. The folder
is a store: a rerun with fewer or other contenders reports what it asked for and keeps the other
runs' rows in ``runs.csv``; a finished run is read back, never trained again.
"""

from __future__ import annotations

import hashlib
import os
import warnings

import torch
from recbole.data.interaction import Interaction

from recbole_kd import checkpoint
from recbole_kd.config import KDConfig
from recbole_kd.errors import KDConfigError
from recbole_kd.key_checks import settings_for
from recbole_kd.model.role_config import recbole_model
from recbole_kd.model.sequential_backbone import is_sequential
from recbole_kd.properties import read_pair
from recbole_kd.quick_start import prepare_run, read_resume_point
from recbole_kd.registry import KD_MODELS, get_model, is_kd_model
from recbole_kd.run_log import init_run_logger
from recbole_kd.timing import clock
from recbole_kd.tools.compare_tuning import Tuner
from recbole_kd.tools.report import (
    chosen_table,
    plot,
    plot_tradeoff,
    relative_summary,
    seeds_label,
    summarize,
)
from recbole_kd.tools.result_store import Results, Run
from recbole_kd.trainer.factory import create_trainer

DEFAULT_BASELINES = ("LightGCN", "NeuMF", "ItemKNN", "Pop")
# A sequential pair's baselines are sequential models, evaluated on the same rows.
DEFAULT_SEQUENTIAL_BASELINES = ("SASRec", "GRU4Rec", "NARM")
DEFAULT_METHODS = ("DE", "RRD", "DERRD", "BD")
DEFAULT_RESULTS = os.path.join("saved", "comparison")


def timed_run(model: str, dataset: str, config_dict: dict, config_files=None) -> dict:
    """Train and test one model; add the mean training seconds per epoch (evaluation excluded)."""
    config = KDConfig(model, dataset, config_file_list=config_files, config_dict=config_dict)
    init_run_logger(config)
    run = prepare_run(config)
    run.take_pretrained_states()  # loaded into the model: no other copy is kept
    trainer = create_trainer(run.config, run.model, run.loaders, timed=True)
    if config["kd_resume"]:
        trainer.resume_from(read_resume_point(config))
    trainer.fit(run.train_data, run.valid_data, saved=True, show_progress=False)
    if is_kd_model(model):
        tests = trainer.evaluate_roles(run.test_data, load_best_model=True)
        valids = trainer.best_valid_results()
    else:
        tests = {"student": trainer.evaluate(run.test_data, load_best_model=True)}
        valids = {"student": trainer.best_valid_result}
    metric = run.config["valid_metric"].lower()
    seconds = trainer.epoch_seconds
    return {
        "test": dict(tests["student"]),
        "teacher_test": dict(tests["teacher"]) if "teacher" in tests else None,
        "best_valid_score": {role: result[metric] for role, result in valids.items() if result},
        "valid": dict(valids["student"] or {}),
        "valid_score_bigger": run.config["valid_metric_bigger"],
        "seconds_per_epoch": sum(seconds) / max(len(seconds), 1),
        "epochs": len(seconds),
        "saved_model_file": trainer.saved_model_file,
        "model": run.model,
        "test_data": run.test_data,
    }


def all_item_scores(model, queries: Interaction) -> torch.Tensor:
    """Every item's score for ``queries`` (users, or a sequential model's rows), as RecBole's
    full-sort evaluation gets them: from ``full_sort_predict``, or from ``predict`` on every
    (user, item) pair of a model that has none (NeuMF)."""
    try:
        return model.full_sort_predict(queries)
    except NotImplementedError:
        users = queries[model.USER_ID]
        items = torch.arange(model.n_items, device=users.device)
        return model.predict(Interaction({model.USER_ID: users.repeat_interleave(len(items)),
                                          model.ITEM_ID: items.repeat(len(users))}))


def scoring_queries(model, test_data, limit: int = 2000) -> Interaction:
    """Up to ``limit`` queries to time full-sort scoring on: users 1, 2, …, or the first rows
    of a sequential split's test part (their histories are what the model reads)."""
    device = next(model.parameters(), torch.empty(0)).device
    if is_sequential(type(model)):
        rows = test_data._dataset.inter_feat
        return rows[torch.arange(min(limit, len(rows)))].to(device)
    users = torch.arange(1, min(limit, model.n_users - 1) + 1, device=device)
    return Interaction({model.USER_ID: users})


@torch.no_grad()
def inference_cost(model, queries: Interaction, repeats: int = 5) -> tuple[int, float]:
    """(parameter count, full-sort scoring milliseconds per 1,000 queries, the least of
    ``repeats`` passes over the same ``queries``: the least is the pass the machine's other
    work slowed least, so equal models get close figures)."""
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    best = float("inf")
    for _ in range(repeats):
        if hasattr(model, "restore_user_e"):  # time the propagation too, not a cached result
            model.restore_user_e = model.restore_item_e = None
        start = clock()
        for index in torch.arange(len(queries)).split(256):
            all_item_scores(model, queries[index])
        best = min(best, clock() - start)
    return params, 1000 * best * 1000 / len(queries)


def trial_result(out: dict) -> dict:
    """A timed run's outcome as the result dict of RecBole's HyperTuning."""
    return {"best_valid_score": out["best_valid_score"]["student"],
            "valid_score_bigger": out["valid_score_bigger"], "best_valid_result": out["valid"],
            "test_result": out["test"]}


def one_seed(dataset: str, pair: dict, settings: dict, seed: int, baselines, methods,
             config_files, progress, results: Results, tuner: Tuner | None = None) -> None:
    common = {**settings, "seed": seed}

    def train(model, config_dict) -> dict:
        return timed_run(model, dataset, {**settings_for(model, common), **config_dict},
                         config_files)

    def run_files(name, seed) -> dict:
        """Each run writes in a folder of its own; a distillation run cut short continues from
        the resume point it left there."""
        folder = results.checkpoint_dir(name, seed)
        resume = checkpoint.resume_point_in(folder)
        if resume is None:
            return {"checkpoint_dir": folder}
        progress(f"seed {seed}: {name} continues from {resume}")
        return {"checkpoint_dir": folder, "kd_resume": resume}

    def record(name, model, config_dict) -> Run:
        if tuner is not None:  # before anything is kept: a later seed needs the choice too
            chosen = tuner.chosen(name, model, config_dict,
                                  lambda m, c: trial_result(train(m, c)))
            config_dict = {**config_dict, **chosen}
        kept = results.kept(name, seed)
        if kept:
            progress(f"seed {seed}: {name} kept from {results.runs_file}")
            return kept[0]
        progress(f"seed {seed}: {name} ({model}) ...")
        out = train(model, {**config_dict, **run_files(name, seed)})
        run = Run(name, seed, out["test"], out["seconds_per_epoch"], out["epochs"],
                  out["saved_model_file"])
        net = out["model"]
        deployed = net.student if is_kd_model(model) else net  # what a distilled run ships
        queries = scoring_queries(deployed, out["test_data"])
        run.params, run.ms_per_1000_users = inference_cost(deployed, queries)
        extra = []
        if out["teacher_test"] is not None:
            extra = [Run("BD teacher", seed, out["teacher_test"], run.seconds_per_epoch,
                         run.epochs, params=inference_cost(net.teacher, queries)[0])]
        results.add(run, *extra)
        progress(f"seed {seed}: {name} done, {out['epochs']} epochs, "
                 f"{out['seconds_per_epoch']:.2f} s/epoch, {dict(out['test'])}")
        return run

    teacher = record("teacher alone", pair["teacher_model"], pair["teacher_config"])
    student = record("student alone", pair["student_model"], pair["student_config"])
    for name in baselines:
        record(name, name, {})
    for method in methods:
        warm = {"teacher_checkpoint": teacher.saved_model_file}
        if method == "BD":
            warm["student_checkpoint"] = student.saved_model_file
        record("BD student" if method == "BD" else method, method, warm)


def check_plan(dataset: str, pair: dict, seeds: int, baselines, methods, config_files,
               settings: dict, tune: int = 0) -> None:
    """Refuse a comparison that could not run to its end, before anything is trained: its
    seeds, baselines, methods and every run's settings."""
    if not isinstance(seeds, int) or seeds < 1:
        raise KDConfigError(f"--seeds {seeds}: a comparison needs at least one seed.")
    if tune < 0:
        raise KDConfigError(f"--tune {tune}: give a number of trials per contender (0: none).")
    for key in ("teacher_model", "student_model"):
        if not pair.get(key):
            raise KDConfigError(f"The pair file names no {key}: add '{key}: <RecBole model>'.")
    for option, names in (("--baselines", baselines), ("--methods", methods)):
        repeated = sorted({name for name in names if list(names).count(name) > 1})
        if repeated:
            raise KDConfigError(
                f"{option} names {', '.join(repeated)} more than once: each contender is one "
                "run per seed; name it once.")
    for name in methods:
        if not is_kd_model(name):
            raise KDConfigError(
                f"--methods: '{name}' is not a distillation method of recbole_kd ("
                f"{', '.join(KD_MODELS)}); RecBole models go in --baselines.")
    for name in baselines:
        if is_kd_model(name):
            raise KDConfigError(f"--baselines: '{name}' is a distillation method: use --methods.")
        get_model(name)  # an unknown name is refused here, naming it
    runs = [(pair["teacher_model"], pair.get("teacher_config") or {}),
            (pair["student_model"], pair.get("student_config") or {}),
            *((name, {}) for name in baselines), *((name, {}) for name in methods)]
    for model, config_dict in runs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # each warning is shown once, by the run itself
            KDConfig(model, dataset, config_file_list=config_files,
                     config_dict={**settings_for(model, settings), **config_dict})


def file_identity(path: str) -> str:
    """A property file as the comparison records it: its name and a digest of its contents, so
    that the same files reached through another install (a new checkout, a moved venv) continue
    the comparison while an edited file is refused."""
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    return f"{os.path.basename(path)} sha256:{digest}"


def default_baselines(pair: dict) -> tuple[str, ...]:
    """RecBole's baselines for a pair: sequential ones for a sequential student."""
    student = recbole_model(str(pair.get("student_model")), " (the pair's student_model)")
    return DEFAULT_SEQUENTIAL_BASELINES if is_sequential(student) else DEFAULT_BASELINES


def compare(dataset: str, pair_file: str, seeds: int = 1, baselines=None,
            methods=DEFAULT_METHODS, config_files=None, results_dir: str = DEFAULT_RESULTS,
            settings: dict | None = None, progress=print, tune: int = 0) -> str:
    """Run the comparison and write its files; returns the Markdown table.

    With ``tune`` N, every contender first gets N trials of RecBole's HyperTuning over its
    search space (:mod:`recbole_kd.tools.compare_tuning`) on the first seed, chosen on
    validation; its chosen settings then run on every seed and are listed in the report."""
    pair = read_pair(pair_file)
    if baselines is None:
        baselines = default_baselines(pair)
    # The pair file applies to every run, so its training settings are shared by all models.
    config_files = [pair_file, *(config_files or [])]
    settings = {"show_progress": False, "state": "WARNING", **(settings or {})}
    check_plan(dataset, pair, seeds, baselines, methods, config_files, settings, tune)
    first_seed = KDConfig(pair["student_model"], dataset, config_file_list=config_files,
                          config_dict=settings_for(pair["student_model"], settings))["seed"]
    setup = {"dataset": dataset, "pair": pair,
             "config_files": [file_identity(path) for path in config_files],
             "settings": settings, "tune": tune}
    results = Results(results_dir, setup)
    tuner = Tuner(tune, results_dir, first_seed, progress=progress) if tune else None
    for k in range(seeds):
        one_seed(dataset, pair, settings, first_seed + k, baselines, methods, config_files,
                 progress, results, tuner)
    runs = results.runs
    metrics = list(runs[0].test)
    table = summarize(runs, metrics)
    if any(run.name == "student alone" for run in runs):
        table += "\n\nRelative to the student alone of the same seed:\n\n"
        table += relative_summary(runs, metrics)
    if tuner is not None:
        table += f"\n\nSettings chosen on validation (seed {first_seed}, {tune} trials each):"
        table += "\n\n" + chosen_table(tuner.choices())
    table += ("\n\nScoring: full-sort scoring of the same queries (users, or a sequential split's "
              "first test rows) by the deployed model, the least of 5 passes, in milliseconds per "
              "1,000 queries; on a shared machine it varies with the load.")
    spread = "mean ± std over seeds" if seeds > 1 else "one seed"
    with open(os.path.join(results_dir, "comparison.md"), "w", encoding="utf-8") as f:
        f.write(f"{dataset}, pair {os.path.basename(pair_file)}, {seeds_label(runs)}, test "
                f"metrics at the best validation ({spread})\n\n{table}\n")
    results.save()
    plot(runs, metrics[0], os.path.join(results_dir, "comparison.png"))
    label = f"{dataset}, {seeds_label(runs)}"
    plot_tradeoff(runs, metrics[0], os.path.join(results_dir, "tradeoff.png"), label)
    progress(f"results written to {results_dir}/")
    return table
