"""DE, RRD and DERRD against the teacher and the student trained alone, on ml-100k.

Same seed and split for every run. The teacher is trained once by plain RecBole and every KD run
distils from its checkpoint; the student alone uses exactly the pair's student settings.

    python benchmarks/derrd_ml100k.py [--epochs 300] [--pair bpr200-bpr20]
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

METRICS = ["recall@10", "ndcg@10", "hit@10", "mrr@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--pair", default="bpr200-bpr20")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--models", default="DE,RRD,DERRD")
    parser.add_argument("--set", nargs="*", default=[], help="extra key=value settings")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole parses --key=value from the command line

    pair = read_pair(args.pair)
    common = {"epochs": args.epochs, "show_progress": False, "state": "WARNING",
              "metrics": ["Recall", "NDCG", "Hit", "MRR"], "topk": [10], "valid_metric": "NDCG@10"}
    common.update(parse_settings(args.set))

    def run(model: str, config_dict: dict) -> dict:  # the shared settings that model accepts
        return timed_run(model, args.dataset, {**settings_for(model, common), **config_dict})

    runs = {}
    runs["teacher alone"] = run(pair["teacher_model"], pair["teacher_config"])
    runs["student alone"] = run(pair["student_model"], pair["student_config"])
    teacher_file = runs["teacher alone"]["saved_model_file"]
    for model in args.models.split(","):
        runs[model] = run(model, {**pair, "teacher_checkpoint": teacher_file})

    alone = runs["student alone"]
    rows = []
    for name, run in runs.items():
        rows.append(
            [name, *(run["test"][m] for m in METRICS), run["epochs"],
             f"{run['seconds_per_epoch']:.2f}",
             f"{run['test']['ndcg@10'] / alone['test']['ndcg@10']:.3f}",
             f"{run['seconds_per_epoch'] / alone['seconds_per_epoch']:.2f}"]
        )
    header = ["run", *(m.replace("@", "@") for m in METRICS), "epochs", "train s/epoch",
              "NDCG@10 / student alone", "s/epoch / student alone"]
    print(f"\n{args.dataset}, pair {args.pair}, test metrics at the best validation NDCG@10\n")
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
