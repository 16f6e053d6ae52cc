"""The comparison's report: Markdown tables over seeds, relative gains and charts."""

from __future__ import annotations

import statistics

from recbole_kd.tools.result_store import Run


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


def chosen_table(choices: dict[str, dict]) -> str:
    """Markdown table: each contender's settings chosen by tuning."""
    lines = ["| run | chosen settings |", "|---|---|"]
    for name, chosen in choices.items():
        settings = ", ".join(f"{k}={v}" for k, v in sorted(chosen.items())) or "nothing to tune"
        lines.append(f"| {name} | {settings} |")
    return "\n".join(lines)


def plot_tradeoff(runs: list[Run], metric: str, path: str, label: str) -> None:
    """What distillation is for: each run's test ``metric`` (mean over seeds) against the
    parameters of the model it deploys, log scale, one labelled point per run."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("The chart needs matplotlib: pip install 'recbole_kd[plot]'") from error
    points = []
    for name in run_names(runs):
        group = [run for run in runs if run.name == name and run.params]
        if group:
            points.append((name, group[0].params,
                           mean_and_spread([run.test[metric] for run in group])[0]))
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    for name, params, value in points:
        axes.scatter(params, value, color="#4C72B0")
        axes.annotate(name, (params, value), textcoords="offset points", xytext=(4, 4),
                      fontsize=8)
    axes.set_xscale("log")
    axes.set_xlabel("parameters of the deployed model")
    axes.set_ylabel(f"test {metric}")
    axes.set_title(f"{label}: test {metric} against model size")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
