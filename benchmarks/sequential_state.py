"""Memory of the per-query state each method keeps for a sequential model, per training row.

For each method, a distillation model between two small GRU4Recs is built on a sequential data
set and prepared for its first epoch (teacher lists, samplers' draws, BD's pools); then every
tensor, numpy array and sparse matrix its distillers (and BD's sampler) hold is counted once by
storage, the models' weights and RecBole's own training rows excluded. Printed: bytes in all and
bytes per query (training row).

    python benchmarks/sequential_state.py                  # ml-100k (about 98,000 rows)
    python benchmarks/sequential_state.py --rows 1000000   # a synthetic data set of ~1M rows
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import scipy.sparse as sp
import torch
from recbole.utils import init_logger

from recbole_kd.config import KDConfig
from recbole_kd.key_checks import settings_for
from recbole_kd.quick_start import prepare_run
from recbole_kd.tools.synthetic import synthetic_interactions

METHODS = ["RRD", "DE", "BD", "RD", "CD", "DCD", "HTD"]
SKIPPED = {"student_net", "teacher_net", "rows", "student", "teacher", "dataset"}


def held_bytes(root) -> int:
    """Bytes of the tensors, arrays and sparse matrices reachable from ``root``'s attributes,
    each storage counted once; modules' parameters and buffers and the models are left out."""
    seen, total, stack, visited = set(), 0, [root], set()
    while stack:
        obj = stack.pop()
        if id(obj) in visited:
            continue
        visited.add(id(obj))
        if torch.is_tensor(obj):
            if isinstance(obj, torch.nn.Parameter):
                continue
            key = obj.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += obj.untyped_storage().nbytes()
        elif isinstance(obj, np.ndarray):
            total += obj.nbytes
        elif sp.issparse(obj):
            stack += [getattr(obj, name) for name in ("data", "indices", "indptr", "row", "col")
                      if hasattr(obj, name)]
        elif isinstance(obj, (list, tuple)):
            stack += list(obj)
        elif isinstance(obj, dict):
            stack += list(obj.values())
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            attributes = dict(vars(obj))
            if isinstance(obj, torch.nn.Module):
                attributes = {k: v for k, v in attributes.items()
                              if k not in ("_parameters", "_buffers", "_modules")}
                attributes.update({k: v for k, v in obj._modules.items()})
            stack += [v for k, v in attributes.items() if k not in SKIPPED]
    return total


def synthetic_folder(rows: int) -> str:
    """A sequential data set of about ``rows`` training rows: synthetic users' items, each
    user's in a random time order."""
    folder = tempfile.mkdtemp()
    users = max(1, rows // 40)
    matrix = synthetic_interactions(users, 3000, mean_activity=42, min_activity=5, seed=0).tocoo()
    order = np.random.default_rng(0).permutation(len(matrix.row))
    path = os.path.join(folder, "synthetic", "synthetic.inter")
    os.makedirs(os.path.dirname(path))
    with open(path, "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        f.write("".join(f"{u}\t{i}\t{t}\n" for u, i, t in
                        zip(matrix.row.tolist(), matrix.col.tolist(), order.tolist())))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=0, help="synthetic rows; 0: ml-100k")
    parser.add_argument("--methods", nargs="*", default=METHODS)
    args = parser.parse_args()
    settings = {"teacher_model": "GRU4Rec", "student_model": "GRU4Rec",
                "teacher_config": {"embedding_size": 16, "hidden_size": 16, "epochs": 1},
                "student_config": {"embedding_size": 8, "hidden_size": 8},
                "state": "ERROR", "show_progress": False, "MAX_ITEM_LIST_LENGTH": 20}
    dataset = "ml-100k"
    if args.rows:
        dataset = "synthetic"
        settings.update(data_path=synthetic_folder(args.rows),
                        load_col={"inter": ["user_id", "item_id", "timestamp"]})
    print(f"data set {dataset}; bytes of per-query state after the first epoch's preparation")
    print("| method | queries | MB in all | bytes per query |")
    print("|---|---|---|---|")
    for method in args.methods:
        config = KDConfig(method, dataset, config_dict=settings_for(method, settings))
        init_logger(config)
        run = prepare_run(config)
        model = run.model
        model.on_epoch_start(0)
        held = held_bytes(model.distillers) + held_bytes(getattr(model, "sampler", None))
        held += held_bytes(model.positives)
        print(f"| {method} | {model.n_queries:,} | {held / 2**20:.1f} | "
              f"{held / model.n_queries:.0f} |", flush=True)


if __name__ == "__main__":
    main()
