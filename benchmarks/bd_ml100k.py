"""BD against the teacher and the student trained alone, on ml-100k, under both rank conventions.

Same seed and split for every run. The teacher and the student are first trained alone, each for
as many epochs as BD's warm-up plus BD phase allows and with the same early stopping; BD starts
from those trained models (its stage 1) and trains both together (stage 2). Each model is tested at
its best validation score (``valid_metric``, NDCG@10 unless ``--set`` changes it), which the table
shows beside the test metrics.

    python benchmarks/bd_ml100k.py [--epochs 300] [--bd-epochs 100] [--pair bpr200-bpr20]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import markdown_table

from recbole_kd.cli import parse_settings, read_pair
from recbole_kd.compare import timed_run

METRICS = ["ndcg@10", "recall@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--pair", default="bpr200-bpr20")
    parser.add_argument("--epochs", type=int, default=300, help="warm-up epochs (upper bound)")
    parser.add_argument("--bd-epochs", type=int, default=100, help="BD phase epochs (upper bound)")
    parser.add_argument("--conventions", default="paper,reference_code")
    parser.add_argument("--set", nargs="*", default=[], help="extra key=value settings")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole parses --key=value from the command line

    pair = read_pair(args.pair)
    common = {"show_progress": False, "state": "WARNING", "metrics": ["Recall", "NDCG"],
              "topk": [10], "valid_metric": "NDCG@10"}
    common.update(parse_settings(args.set))

    runs = {}
    budget = args.epochs + args.bd_epochs
    for role in ("teacher", "student"):
        runs[f"{role} alone"] = timed_run(
            pair[f"{role}_model"], args.dataset,
            {**common, "epochs": budget, **pair[f"{role}_config"]},
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
    rows = []
    for name, run in runs.items():
        trainer = run["trainer"]
        if name.startswith("BD"):
            teacher = trainer.teacher_results["teacher_test_result"]
            rows.append([
                f"{name} teacher", *(teacher[m] for m in METRICS),
                f"{trainer.teacher_results['teacher_best_valid_score']:.4f}", run["epochs"], "",
                f"{teacher['ndcg@10'] / runs['teacher alone']['test']['ndcg@10']:.3f}", "",
            ])
            rows.append([
                f"{name} student", *(run["test"][m] for m in METRICS),
                f"{trainer.best_valid_score:.4f}", run["epochs"], f"{run['seconds_per_epoch']:.2f}",
                f"{run['test']['ndcg@10'] / runs['student alone']['test']['ndcg@10']:.3f}",
                f"{run['seconds_per_epoch'] / alone_seconds:.2f}",
            ])
        else:
            rows.append([name, *(run["test"][m] for m in METRICS),
                         f"{trainer.best_valid_score:.4f}", run["epochs"],
                         f"{run['seconds_per_epoch']:.2f}", "1.000", ""])
    header = ["run", "NDCG@10", "Recall@10", "best valid score", "epochs",
              "train s/epoch (both models for BD)", "NDCG@10 / same model alone",
              "BD s/epoch / (teacher + student alone)"]
    print(f"\n{args.dataset}, pair {args.pair}, test metrics at each model's best validation score "
          "(valid_metric)\n")
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
