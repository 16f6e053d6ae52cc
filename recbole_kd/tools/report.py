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


def value_cell(values: list[float], places: int) -> str:
    """``mean ± std`` over seeds; the value alone for a single seed (no spread is known)."""
    mean, spread = mean_and_spread(values)
    return f"{mean:.{places}f} ± {spread:.{places}f}" if len(values) > 1 else f"{mean:.{places}f}"


def summarize(runs: list[Run], metrics: list[str]) -> str:
    """Markdown table: mean ± std over seeds of each metric, per run name, in order."""
    names = run_names(runs)
    header = ["run", *metrics, "train s/epoch", "params", "scoring ms / 1,000 queries"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        group = [run for run in runs if run.name == name]
        cells = [name]
        for metric in metrics:
            cells.append(value_cell([run.test[metric] for run in group], 4))
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
            cells.append(value_cell(ratios, 3) if ratios else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gains(runs: list[Run], metric: str) -> dict[str, list[float]]:
    """Each run's ``metric`` over the student alone's of the same seed, minus 1, by run name."""
    base = {run.seed: run.test[metric] for run in runs if run.name == "student alone"}
    found: dict[str, list[float]] = {}
    for run in runs:
        if base.get(run.seed):
            found.setdefault(run.name, []).append(run.test[metric] / base[run.seed] - 1)
    return found


def plot(runs: list[Run], metric: str, path: str) -> None:
    """Bar chart of each run's gain in ``metric`` over the student alone of its seed (mean over
    seeds, std as error bars), the teacher alone's gain as a line: a 5 % gain is a bar of 5."""
    Figure = figure_class()
    by_name = gains(runs, metric)
    if not by_name:  # no student alone to compare with: nothing to draw
        return
    teacher = by_name.pop("teacher alone", None)
    by_name.pop("student alone", None)
    by_name.pop("BD teacher", None)  # a teacher: set against the teacher alone in the tables
    names = list(by_name)
    means, spreads = zip(*(mean_and_spread(by_name[name]) for name in names)) if names else ((), ())
    figure = Figure(figsize=(0.8 * len(names) + 3, 4))
    axes = figure.subplots()
    colours = ["#4C72B0" if m >= 0 else "#C44E52" for m in means]
    several = len({run.seed for run in runs}) > 1  # no error bar where no spread is known
    axes.bar(range(len(names)), [100 * m for m in means], color=colours, capsize=3,
             yerr=[100 * v for v in spreads] if several else None)
    axes.axhline(0, color="black", linewidth=0.8)
    if teacher:
        axes.axhline(100 * mean_and_spread(teacher)[0], color="#55A868", linestyle="--",
                     label="teacher alone")
        axes.legend(loc="best", fontsize=8)
    axes.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axes.set_ylabel(f"test {metric}: % over the student alone")
    seeds = len({run.seed for run in runs})
    axes.set_title(f"Gain over the student alone of the same seed ({seeds} seed"
                   f"{'s' if seeds > 1 else ''})", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def figure_class():
    """matplotlib's Figure, or an error naming the extra that installs it."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("The chart needs matplotlib: pip install 'recbole_kd[plot]'") from error
    return Figure


def seeds_label(runs: list[Run]) -> str:
    """"seed 2020" or "seeds 2020-2022"."""
    seeds = sorted({run.seed for run in runs})
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"


def chosen_table(choices: dict[str, dict]) -> str:
    """Markdown table: each contender's settings chosen by tuning."""
    lines = ["| run | chosen settings |", "|---|---|"]
    for name, chosen in choices.items():
        settings = ", ".join(f"{k}={v}" for k, v in sorted(chosen.items())) or "nothing to tune"
        lines.append(f"| {name} | {settings} |")
    return "\n".join(lines)


def plot_tradeoff(runs: list[Run], metric: str, path: str, label: str) -> None:
    """What distillation is for: each run's test ``metric`` (mean over seeds) against the
    parameters of the model it deploys, log scale. Runs at one point share a label; labels of
    neighbouring points are set apart to the right, each tied to its point by a line."""
    Figure = figure_class()
    points: dict[tuple[int, float], list[str]] = {}
    for name in run_names(runs):
        group = [run for run in runs if run.name == name and run.params]
        if group:
            value = round(mean_and_spread([run.test[metric] for run in group])[0], 6)
            points.setdefault((group[0].params, value), []).append(name)
    figure = Figure(figsize=(7.5, 4.8))
    axes = figure.subplots()
    for params, value in points:
        axes.scatter(params, value, color="#4C72B0", zorder=3)
    axes.set_xscale("log")
    low, high = axes.get_ylim()
    gap = 0.055 * (high - low)  # the least vertical distance between two labels
    for params in {params for params, _ in points}:
        column = sorted((value, names) for (p, value), names in points.items() if p == params)
        placed = []
        for value, _ in column:
            placed.append(max(value, placed[-1] + gap) if placed else value)
        shift = max(0.0, placed[-1] - high + gap / 2) if placed else 0.0
        for (value, names), y in zip(column, placed):
            axes.annotate(", ".join(names), (params, value), xytext=(params * 1.12, y - shift),
                          fontsize=8, va="center",
                          arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.5})
    axes.set_xlim(right=axes.get_xlim()[1] * 2.2)  # room for the labels on the right
    axes.set_xlabel("parameters of the deployed model")
    axes.set_ylabel(f"test {metric}")
    axes.set_title(f"{label}: test {metric} against model size", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
