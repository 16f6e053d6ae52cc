"""BD against the teacher and the student trained alone, on ml-100k, under both rank conventions.

Same seed and split for every run of a seed (``--seeds N``: seeds 2020 to 2020 + N - 1, each its
own split, and the ratios' mean ± std over them). The teacher and the student are first trained alone, each for
as many epochs as BD's warm-up plus BD phase allows and with the same early stopping; BD starts
from those trained models (its stage 1) and trains both together (stage 2). Each model is tested at
its best validation score (``valid_metric``, NDCG@10 unless ``--set`` changes it), which the table
shows beside the test metrics.

    python benchmarks/bd_ml100k.py [--epochs 300] [--bd-epochs 100] [--pair bpr200-bpr20]
        [--conventions paper,reference_code] [--seeds 1] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import markdown_table

from recbole_kd.key_checks import settings_for
from recbole_kd.properties import parse_settings, read_pair
from recbole_kd.tools.compare import timed_run
from recbole_kd.tools.report import mean_and_spread

METRICS = ["ndcg@10", "recall@10"]


def one_seed(args, pair: dict, common: dict) -> tuple[list[list], dict[str, list[float]]]:
    """The models alone and BD under each convention, on ``common``'s seed: the table's rows and,
    per convention, [teacher ratio, student ratio, time ratio]."""
    runs = {}
    budget = args.epochs + args.bd_epochs
    for role in ("teacher", "student"):
        model = pair[f"{role}_model"]  # with the shared settings it accepts (not BD's)
        runs[f"{role} alone"] = timed_run(
            model, args.dataset,
            {**settings_for(model, common), "epochs": budget, **pair[f"{role}_config"]},
        )
    warm = {f"{role}_checkpoint": runs[f"{role} alone"]["saved_model_file"]
            for role in ("teacher", "student")}
    for convention in args.conventions.split(","):
        runs[f"BD ({convention})"] = timed_run(
            "BD", args.dataset,
            {**common, **pair, **warm, "epochs": args.bd_epochs, "bd_rank_convention": convention},
        )

    alone_seconds = runs["teacher alone"]["seconds_per_epoch"] + runs["student alone"][
        "seconds_per_epoch"]
    rows, ratios = [], {}
    for name, run in runs.items():
        valid = run["best_valid_score"]
        if name.startswith("BD"):
            teacher = run["teacher_test"]
            ratios[name] = [
                teacher["ndcg@10"] / runs["teacher alone"]["test"]["ndcg@10"],
                run["test"]["ndcg@10"] / runs["student alone"]["test"]["ndcg@10"],
                run["seconds_per_epoch"] / alone_seconds,
            ]
            rows.append([
                f"{name} teacher", *(teacher[m] for m in METRICS),
                f"{valid['teacher']:.4f}", run["epochs"], "",
                f"{ratios[name][0]:.3f}", "",
            ])
            rows.append([
                f"{name} student", *(run["test"][m] for m in METRICS),
                f"{valid['student']:.4f}", run["epochs"], f"{run['seconds_per_epoch']:.2f}",
                f"{ratios[name][1]:.3f}", f"{ratios[name][2]:.2f}",
            ])
        else:
            rows.append([name, *(run["test"][m] for m in METRICS),
                         f"{valid['student']:.4f}", run["epochs"],
                         f"{run['seconds_per_epoch']:.2f}", "1.000", ""])
    return rows, ratios


def mean_std(values: list[float], digits: int) -> str:
    mean, spread = mean_and_spread(values)
    each = ", ".join(f"{v:.{digits}f}" for v in values)
    return f"{mean:.{digits}f} ± {spread:.{digits}f} ({each})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--pair", default="bpr200-bpr20")
    parser.add_argument("--epochs", type=int, default=300, help="warm-up epochs (upper bound)")
    parser.add_argument("--bd-epochs", type=int, default=100, help="BD phase epochs (upper bound)")
    parser.add_argument("--conventions", default="paper,reference_code")
    parser.add_argument("--seeds", type=int, default=1,
                        help="seeds from `seed` (2020): each its own split, ratios within a seed")
    parser.add_argument("--set", nargs="*", default=[], help="extra key=value settings")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole parses --key=value from the command line

    pair = read_pair(args.pair)
    common = {"show_progress": False, "state": "WARNING", "metrics": ["Recall", "NDCG"],
              "topk": [10], "valid_metric": "NDCG@10", "seed": 2020}
    common.update(parse_settings(args.set))
    header = ["run", "NDCG@10", "Recall@10", "best valid score", "epochs",
              "train s/epoch (both models for BD)", "NDCG@10 / same model alone",
              "BD s/epoch / (teacher + student alone)"]
    per_seed = []
    for seed in range(common["seed"], common["seed"] + args.seeds):
        rows, ratios = one_seed(args, pair, {**common, "seed": seed})
        per_seed.append(ratios)
        print(f"\n{args.dataset}, pair {args.pair}, seed {seed}, test metrics at each model's best "
              "validation score (valid_metric)\n")
        print(markdown_table(header, rows), flush=True)
    if args.seeds > 1:
        summary = [[name, *(mean_std([r[name][k] for r in per_seed], 3 if k < 2 else 2)
                            for k in range(3))] for name in per_seed[0]]
        print(f"\nmean ± std over {args.seeds} seeds (each seed's value in brackets)\n")
        print(markdown_table(["run", "BD teacher NDCG@10 / teacher alone",
                              "BD student NDCG@10 / student alone",
                              "BD s/epoch / (teacher + student alone)"], summary))


if __name__ == "__main__":
    main()
