"""Cost of one evaluation under the DE-RRD protocol against RecBole's full-sort and uni499 ones.

``kd_eval_protocol: fixed_sampled`` scores users x all items as RecBole's full-sort evaluation
does and then keeps each user's 500 candidates, so it should cost about one full-sort evaluation.
RecBole's ``uni499`` scores each (user, candidate) pair through ``predict`` instead. The three are
timed on the same leave-one-out validation data with the same (untrained: cost does not depend on
the weights) BPR student, in one process, best of ``--repeats``.

    python benchmarks/protocol_cost.py [--derrd-loo ../shared/data/citeulike-t/derrd-loo]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import markdown_table

from recbole_kd.properties import read_pair

DEFAULT_SPLIT = os.path.join(HERE, "..", "..", "shared", "data", "citeulike-t", "derrd-loo")

# (row name, settings on top of properties/protocols/derrd.yaml); uni499 keeps its split.
PROTOCOLS = [
    ("RecBole full sort", {"kd_eval_protocol": "full"}),
    ("fixed_sampled (DE-RRD protocol)", {"kd_eval_protocol": "fixed_sampled"}),
    ("RecBole uni499", {"kd_eval_protocol": "full",
                        "eval_args": {**read_pair("derrd")["eval_args"], "mode": "uni499"}}),
]


def evaluation_seconds(dataset: str, settings: dict, repeats: int) -> tuple[float, int]:
    """Best wall time of one validation evaluation, and the number of validated users."""
    from recbole_kd.config import KDConfig
    from recbole_kd.properties import pair_file
    from recbole_kd.quick_start import prepare_run
    from recbole_kd.trainer.factory import create_trainer

    config = KDConfig("BPR", dataset, config_file_list=[pair_file("derrd")],
                      config_dict={"embedding_size": 20, "state": "WARNING", **settings})
    run = prepare_run(config)
    valid_data = run.valid_data
    trainer = create_trainer(run.config, run.model, run.loaders)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        trainer.evaluate(valid_data, load_best_model=False)
        best = min(best, time.perf_counter() - start)
    return best, int(valid_data._dataset.inter_feat[config["USER_ID_FIELD"]].unique().numel())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--derrd-loo", default=DEFAULT_SPLIT,
                        help="the authors' CiteULike-t split (skipped if absent)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    datasets = [("ml-100k", {})]
    workdir = tempfile.mkdtemp()
    if os.path.isdir(args.derrd_loo):
        from recbole_kd.tools.convert import convert_fixed_split

        convert_fixed_split(args.derrd_loo, workdir)
        datasets.append(("citeulike-t-loo", {"data_path": workdir}))
    else:
        print(f"{args.derrd_loo} not found: CiteULike-t skipped")

    rows = []
    for dataset, data_settings in datasets:
        full = None
        for name, settings in PROTOCOLS:
            seconds, users = evaluation_seconds(dataset, {**data_settings, **settings},
                                                args.repeats)
            full = full or seconds
            rows.append([dataset, name, users, f"{seconds:.2f}", f"{seconds / full:.2f}"])
            print(rows[-1], flush=True)
    print(markdown_table(["data set", "evaluation", "validation users", "seconds",
                          "× full sort"], rows))


if __name__ == "__main__":
    main()
