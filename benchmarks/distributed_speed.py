"""Training seconds per epoch of a distillation run in one process and over several (gloo, CPU).

Each method trains ``--epochs`` epochs on ml-100k (BPR-200 -> BPR-20, the shipped pair) in one
process, then in ``--ranks`` processes from the same teacher (trained once, cached). Reported:
the mean training seconds of the epochs after the first (rank 0's; evaluation excluded), the
CPU seconds of the busiest rank over the whole fit, and the test NDCG@10 after the last epoch
(a check that both runs learn alike, not a converged figure). The machine may be shared: the
load average at each start is printed.

    OMP_NUM_THREADS=1 python benchmarks/distributed_speed.py --methods RRD,DERRD,BD --epochs 5
"""

from __future__ import annotations

import argparse
import os
import time

from common import markdown_table
from recbole.utils import init_seed

from recbole_kd import distributed
from recbole_kd.config import KDConfig
from recbole_kd.properties import pair_file
from recbole_kd.quick_start import prepare_run
from recbole_kd.trainer.factory import create_trainer


def timed_fit(model: str, dataset: str, config_file_list, config_dict) -> dict:
    """Train on this rank (or the only process); rank 0's epoch times and every rank's CPU."""
    config = KDConfig(model, dataset, config_file_list, config_dict)
    init_seed(config["seed"], config["reproducibility"])
    run = prepare_run(config)
    trainer = create_trainer(config, run.model, run.loaders, timed=True)
    cpu = time.process_time()
    trainer.fit(run.train_data, run.valid_data, verbose=False, saved=False)
    cpu = time.process_time() - cpu
    test = trainer.evaluate(run.test_data, load_best_model=False)
    return {"epoch_seconds": trainer.epoch_seconds, "cpu": distributed.all_gather_object(cpu),
            "ndcg": float(test["ndcg@10"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="RRD,DERRD,BD")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--dataset", default="ml-100k")
    args = parser.parse_args()
    settings = {"epochs": args.epochs, "eval_step": args.epochs, "stopping_step": args.epochs,
                "show_progress": False, "state": "WARNING", "metrics": ["NDCG"], "topk": [10],
                "valid_metric": "NDCG@10"}
    files = [pair_file("bpr200-bpr20")]
    rows = []
    for method in args.methods.split(","):
        for ranks in (1, args.ranks):
            load = os.getloadavg()[0]
            if ranks == 1:
                out = timed_fit(method, args.dataset, files, dict(settings))
            else:
                out = distributed.spawn(timed_fit, ranks, -1, "localhost", 29533, 0,
                                        dict(settings), args=(method, args.dataset, files))
            later = out["epoch_seconds"][1:] or out["epoch_seconds"]
            rows.append([method, ranks, sum(later) / len(later), max(out["cpu"]), out["ndcg"],
                         f"{load:.1f}"])
            print(rows[-1], flush=True)
    print(markdown_table(["method", "processes", "train s/epoch", "CPU s (busiest rank)",
                          f"test NDCG@10 after {args.epochs} epochs", "load average"], rows))


if __name__ == "__main__":
    main()
