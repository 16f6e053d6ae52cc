"""Side-by-side comparison: RecBole baselines and every distillation method, same split and seeds.

    python run_recbole_kd.py --compare -d ml-100k --config_files bpr200-bpr20 --seeds 3

For each seed: the pair's teacher and student trained alone, RecBole baselines (unmodified), then
DE, RRD and DERRD distilling the teacher trained alone, and BD starting from both models trained
alone. Writes ``comparison.md`` (mean ± std over seeds), ``runs.csv`` (one row per run) and
``comparison.png`` (bar chart) into the results folder. ``runs.csv`` grows after every run, and
the same command started again after an interruption trains only the runs it lacks.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from recbole.data.interaction import Interaction
from recbole.utils import init_logger

from recbole_kd.cli import read_pair
from recbole_kd.config import KDConfig
from recbole_kd.protocol import create_trainer
from recbole_kd.quick_start import build

DEFAULT_BASELINES = ("LightGCN", "NeuMF", "ItemKNN", "Pop")
DEFAULT_METHODS = ("DE", "RRD", "DERRD", "BD")
# runs.csv columns after the run, the seed and the test metrics.
CSV_FIELDS = ("train_seconds_per_epoch", "epochs", "params", "scoring_ms_per_1000_users",
              "saved_model_file")


@dataclass
class Run:
    """One trained model's outcome."""

    name: str
    seed: int
    test: dict
    seconds_per_epoch: float
    epochs: int
    saved_model_file: str = ""
    params: int | None = None
    ms_per_1000_users: float | None = None


def timed_run(model: str, dataset: str, config_dict: dict, config_files=None) -> dict:
    """Train and test one model; add the mean training seconds per epoch (evaluation excluded)."""
    config = KDConfig(model, dataset, config_file_list=config_files, config_dict=config_dict)
    init_logger(config)
    train_data, valid_data, test_data, net = build(config)
    trainer = create_trainer(config, net, (train_data, valid_data, test_data))
    epoch_seconds = []
    train_epoch = trainer._train_epoch

    def timed_epoch(*args, **kwargs):
        start = time.perf_counter()
        loss = train_epoch(*args, **kwargs)
        epoch_seconds.append(time.perf_counter() - start)
        return loss

    trainer._train_epoch = timed_epoch
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    test = trainer.evaluate(test_data, load_best_model=True)
    return {
        "test": dict(test),
        "seconds_per_epoch": sum(epoch_seconds) / max(len(epoch_seconds), 1),
        "epochs": len(epoch_seconds),
        "saved_model_file": trainer.saved_model_file,
        "trainer": trainer,
        "model": net,
        "test_data": test_data,
    }


@torch.no_grad()
def inference_cost(model, test_data, users: int = 2000, repeats: int = 3) -> tuple[int, float]:
    """(parameter count, full-sort scoring milliseconds per 1,000 users, best of ``repeats``)."""
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    n_users = min(users, model.n_users - 1)
    device = next(model.parameters(), torch.empty(0)).device
    user_ids = torch.arange(1, n_users + 1, device=device)
    best = float("inf")
    for _ in range(repeats):
        if hasattr(model, "restore_user_e"):  # time the propagation too, not a cached result
            model.restore_user_e = model.restore_item_e = None
        start = time.perf_counter()
        for batch in user_ids.split(256):
            model.full_sort_predict(Interaction({model.USER_ID: batch}))
        best = min(best, time.perf_counter() - start)
    return params, 1000 * best * 1000 / n_users


def one_seed(dataset: str, pair: dict, settings: dict, seed: int, baselines, methods,
             config_files, progress, results: Results) -> None:
    common = {**settings, "seed": seed}

    def record(name, model, config_dict, cost=False) -> Run:
        kept = results.kept(name, seed)
        if kept:
            progress(f"seed {seed}: {name} kept from {results.runs_file}")
            return kept[0]
        progress(f"seed {seed}: {name} ({model}) ...")
        out = timed_run(model, dataset, {**common, **config_dict}, config_files)
        run = Run(name, seed, out["test"], out["seconds_per_epoch"], out["epochs"],
                  out["saved_model_file"])
        if cost:
            run.params, run.ms_per_1000_users = inference_cost(out["model"], out["test_data"])
        extra = []
        if model == "BD":
            teacher_test = out["trainer"].teacher_results["teacher_test_result"]
            extra = [Run("BD teacher", seed, teacher_test, run.seconds_per_epoch, run.epochs)]
        results.add(run, *extra)
        progress(f"seed {seed}: {name} done, {out['epochs']} epochs, "
                 f"{out['seconds_per_epoch']:.2f} s/epoch, {dict(out['test'])}")
        return run

    teacher = record("teacher alone", pair["teacher_model"], pair["teacher_config"], cost=True)
    student = record("student alone", pair["student_model"], pair["student_config"], cost=True)
    for name in baselines:
        record(name, name, {})
    for method in methods:
        warm = {"teacher_checkpoint": teacher.saved_model_file}
        if method == "BD":
            warm["student_checkpoint"] = student.saved_model_file
        record("BD student" if method == "BD" else method, method, warm)


class Results:
    """The comparison's runs, saved to ``runs.csv`` after each one, so an interrupted comparison
    started again with the same command and results folder trains only what is missing.

    ``comparison.json`` records what was compared (data set, pair, config files, settings); a
    folder holding another comparison is refused rather than mixed into it.
    """

    def __init__(self, results_dir: str, setup: dict):
        os.makedirs(results_dir, exist_ok=True)
        self.runs_file = os.path.join(results_dir, "runs.csv")
        setup_file = os.path.join(results_dir, "comparison.json")
        setup = json.loads(json.dumps(setup, default=str))
        self.earlier: list[Run] = []
        if os.path.exists(self.runs_file) and os.path.exists(setup_file):
            with open(setup_file, encoding="utf-8") as f:
                stored = json.load(f)
            if stored != setup:
                changed = sorted(k for k in {*stored, *setup} if stored.get(k) != setup.get(k))
                raise ValueError(
                    f"{results_dir}/ holds the results of another comparison (its "
                    f"{', '.join(changed)} differ). Pass another --results folder, or delete "
                    f"{results_dir}/ to start afresh."
                )
            self.earlier = read_runs(self.runs_file)
        with open(setup_file, "w", encoding="utf-8") as f:
            json.dump(setup, f, indent=1)
        self.runs: list[Run] = []

    def kept(self, name: str, seed: int) -> list[Run]:
        """The earlier run ``name`` of ``seed`` (BD: with its teacher), now part of the results;
        [] when it must be trained (absent, or its checkpoint is gone)."""
        found = [run for run in self.earlier if run.seed == seed and (
            run.name == name or (name == "BD student" and run.name == "BD teacher"))]
        usable = found and all(not run.saved_model_file or os.path.exists(run.saved_model_file)
                               for run in found)
        if not usable:
            return []
        self.runs += found
        return found

    def add(self, *runs: Run) -> None:
        self.runs += runs
        self.save()

    def save(self) -> None:
        """Write this comparison's runs (and no earlier run it left out) to ``runs.csv``."""
        write_csv(self.runs, list(self.runs[0].test), self.runs_file)


def run_names(runs: list[Run]) -> list[str]:
    """The distinct run names, in their first order."""
    return list(dict.fromkeys(run.name for run in runs))


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) over seeds."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: list[Run], metrics: list[str]) -> str:
    """Markdown table: mean ± std over seeds of each metric, per run name, in order."""
    names = run_names(runs)
    header = ["run", *metrics, "train s/epoch", "params", "scoring ms / 1,000 users"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        group = [run for run in runs if run.name == name]
        cells = [name]
        for metric in metrics:
            mean, spread = mean_and_spread([run.test[metric] for run in group])
            cells.append(f"{mean:.4f} ± {spread:.4f}")
        cells.append(f"{statistics.mean(run.seconds_per_epoch for run in group):.2f}")
        cells.append(str(group[0].params) if group[0].params else "")
        costs = [run.ms_per_1000_users for run in group if run.ms_per_1000_users]
        cells.append(f"{statistics.mean(costs):.1f}" if costs else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def relative_summary(runs: list[Run], metrics: list[str]) -> str:
    """Markdown table: each run's metrics divided by the student alone's of the same seed, and the
    BD teacher's by the teacher alone's (mean ± std over seeds)."""
    names = run_names(runs)
    rows = [(name, name, "student alone") for name in names]
    if "BD teacher" in names and "teacher alone" in names:
        rows.append(("BD teacher × teacher alone", "BD teacher", "teacher alone"))
    lines = ["| run | " + " | ".join(f"{m} × student alone" for m in metrics) + " |",
             "|" + "---|" * (len(metrics) + 1)]
    for label, name, reference in rows:
        base = {run.seed: run.test for run in runs if run.name == reference}
        group = [run for run in runs if run.name == name and run.seed in base]
        cells = [label]
        for metric in metrics:
            ratios = [run.test[metric] / base[run.seed][metric] for run in group
                      if base[run.seed][metric]]
            cells.append("{:.3f} ± {:.3f}".format(*mean_and_spread(ratios)) if ratios else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(runs: list[Run], metrics: list[str], path: str) -> None:
    """One row per run, written to a temporary file and renamed: never a half-written file."""
    with open(path + ".partial", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "seed", *metrics, *CSV_FIELDS])
        for run in runs:
            writer.writerow([run.name, run.seed, *(run.test[m] for m in metrics),
                             f"{run.seconds_per_epoch:.4f}", run.epochs, run.params or "",
                             f"{run.ms_per_1000_users:.2f}" if run.ms_per_1000_users else "",
                             run.saved_model_file])
    os.replace(path + ".partial", path)


def read_runs(path: str) -> list[Run]:
    """The runs of a ``runs.csv`` written by :func:`write_csv`."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    runs = []
    for row in rows:
        metrics = {k: float(v) for k, v in row.items() if k not in ("run", "seed", *CSV_FIELDS)}
        runs.append(Run(
            row["run"], int(row["seed"]), metrics, float(row["train_seconds_per_epoch"]),
            int(row["epochs"]), row["saved_model_file"],
            int(row["params"]) if row["params"] else None,
            float(row["scoring_ms_per_1000_users"]) if row["scoring_ms_per_1000_users"] else None,
        ))
    return runs


def plot(runs: list[Run], metric: str, path: str) -> None:
    """Bar chart of ``metric`` per run (mean over seeds, std as error bars)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("The chart needs matplotlib: pip install 'recbole_kd[plot]'") from error
    names = run_names(runs)
    values = [[run.test[metric] for run in runs if run.name == name] for name in names]
    means, spreads = zip(*map(mean_and_spread, values))
    figure = Figure(figsize=(1.1 * len(names) + 2, 4))
    axes = figure.subplots()
    axes.bar(range(len(names)), means, yerr=spreads, capsize=3, color="#4C72B0")
    axes.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axes.set_ylabel(f"test {metric}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def compare(dataset: str, pair_file: str, seeds: int = 1, baselines=DEFAULT_BASELINES,
            methods=DEFAULT_METHODS, config_files=None, results_dir: str = "results",
            settings: dict | None = None, progress=print) -> str:
    """Run the comparison and write its files; returns the Markdown table."""
    pair = read_pair(pair_file)
    # The pair file applies to every run, so its training settings are shared by all models.
    config_files = [pair_file, *(config_files or [])]
    settings = {"show_progress": False, "state": "WARNING", **(settings or {})}
    first_seed = KDConfig("BPR", dataset, config_file_list=config_files,
                          config_dict=settings)["seed"]
    setup = {"dataset": dataset, "pair": pair, "config_files": config_files, "settings": settings}
    results = Results(results_dir, setup)
    for k in range(seeds):
        one_seed(dataset, pair, settings, first_seed + k, baselines, methods, config_files,
                 progress, results)
    runs = results.runs
    metrics = list(runs[0].test)
    table = summarize(runs, metrics)
    if any(run.name == "student alone" for run in runs):
        table += "\n\nRelative to the student alone of the same seed:\n\n"
        table += relative_summary(runs, metrics)
    with open(os.path.join(results_dir, "comparison.md"), "w", encoding="utf-8") as f:
        f.write(f"{dataset}, pair {os.path.basename(pair_file)}, {seeds} seed(s) from "
                f"{first_seed}, test metrics at the best validation (mean ± std)\n\n{table}\n")
    results.save()
    plot(runs, metrics[0], os.path.join(results_dir, "comparison.png"))
    progress(f"results written to {results_dir}/")
    return table


def main(args, config_files) -> None:
    """Entry from run_recbole_kd.py --compare."""
    sys.argv = sys.argv[:1]  # RecBole would parse --key=value from the command line again
    from recbole_kd.cli import pair_file, parse_settings

    settings = parse_settings(args.set)
    pair = config_files[0] if config_files else pair_file("bpr200-bpr20")
    table = compare(
        args.dataset, pair, seeds=args.seeds,
        baselines=[b for b in args.baselines.split(",") if b],
        methods=[m for m in args.methods.split(",") if m],
        config_files=config_files[1:] if config_files else None,
        results_dir=args.results, settings=settings,
    )
    print(table)
