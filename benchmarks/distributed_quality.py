"""Test NDCG@10 of converged distillation runs over several processes against one process.

Each method runs to its early stop on ml-100k (BPR-200 -> BPR-20, the shipped pair, RecBole's
defaults otherwise) once in one process and once in ``--ranks`` processes (gloo, CPU), for each
seed; both runs distil the same cached teacher (BD: the same warm-ups). Reported per run: the
test NDCG@10 of the student (and of BD's teacher), the wall time and the load average at its
start; then, per method and model, the mean over seeds of the several-process run's NDCG@10
divided by the one-process run's.

    OMP_NUM_THREADS=1 python benchmarks/distributed_quality.py --methods RRD,BD,DERRD --seeds 3
"""

from __future__ import annotations

import argparse
import os
import socket
import time

from common import markdown_table

from recbole_kd.properties import pair_file
from recbole_kd.quick_start import run_recbole_kd


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def ndcg(result: dict) -> dict[str, float]:
    """Test NDCG@10 by model: the student, and BD's teacher."""
    found = {"student": float(result["test_result"]["ndcg@10"])}
    if "teacher_test_result" in result:
        found["teacher"] = float(result["teacher_test_result"]["ndcg@10"])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="RRD,DERRD,BD")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 2020, 2021, ...")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--dataset", default="ml-100k")
    args = parser.parse_args()
    files = [pair_file("bpr200-bpr20")]
    rows, figures = [], {}
    for seed in range(2020, 2020 + args.seeds):
        for method in args.methods.split(","):
            for ranks in (1, args.ranks):
                settings = {"seed": seed, "show_progress": False, "state": "WARNING"}
                load, start = os.getloadavg()[0], time.perf_counter()
                result = run_recbole_kd(method, args.dataset, files, settings, nproc=ranks,
                                        port=free_port())
                wall = time.perf_counter() - start
                for model, value in ndcg(result).items():
                    figures[method, model, seed, ranks] = value
                    rows.append([method, model, seed, ranks, f"{value:.4f}", f"{wall:.0f}",
                                 f"{load:.1f}"])
                    print(rows[-1], flush=True)
    print(markdown_table(["method", "model", "seed", "processes", "test NDCG@10", "wall s",
                          "load average"], rows))
    ratios = []
    for method, model in dict.fromkeys((m, k) for m, k, _, _ in figures):
        per_seed = [figures[method, model, s, args.ranks] / figures[method, model, s, 1]
                    for s in range(2020, 2020 + args.seeds)]
        ratios.append([method, model, " / ".join(f"{r:.3f}" for r in per_seed),
                       f"{sum(per_seed) / len(per_seed):.3f}"])
    print()
    print(markdown_table(["method", "model", f"{args.ranks} processes / 1, by seed", "mean"],
                         ratios))


if __name__ == "__main__":
    main()
