"""Time and peak memory of the distillation samplers at scale, on synthetic data (CPU).

Three operations, each measured in a fresh subprocess so that its peak RSS is its own:

- ``top_n``: :func:`teacher_top_n`, RRD's one-off teacher top-N lists (N = ``--top-n``);
- ``refresh``: one :meth:`RankDiscrepancySampler.refresh`, BD's rank refresh, drawing the pools
  of ``--epochs`` epochs (``bd_update_epochs``);
- ``rrd_sample``: :meth:`RelaxedRankingSampler.sample`, RRD's per-epoch draw (K = L = 40), after
  building the sampler (whose validation pass is timed apart); its top-N lists are computed first,
  outside the measurement.

Data come from :func:`recbole_kd.synthetic.synthetic_interactions` (Zipf item popularity, Lomax
activity, ``--mean-activity`` interactions per user); teacher and student are
:class:`LowRankScores` of rank 64 and 16 sharing a popularity bias. "Scoring" is the time spent
in those stand-in models: a real model's scoring cost replaces it.

Memory: after data generation the worker resets its peak-RSS mark (``/proc/self/clear_refs``),
then reports ``ru_maxrss`` after the operation minus ``ru_maxrss`` before it ("peak growth"),
the baseline RSS it grew from, and the bytes of what the operation keeps. The machine may be
shared: the load average at each start is reported, and times are single runs.

With ``--world-size W`` each operation also runs for each of W ranks' blocks of users (whole
chunks, balanced by interactions, as :mod:`recbole_kd.sharding` cuts them), each block in its own
process: the sharded precomputation needs no communication, so a rank's CPU seconds and memory
are those of its block. The slowest rank is compared with one process over every user.

    python benchmarks/scale.py                                    # everything, default sizes
    python benchmarks/scale.py --sizes 5000x20000 --tasks refresh --chunk-sweep
    python benchmarks/scale.py --sizes 10000x20000 100000x50000 --world-size 2 --chunk-size 256
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

TASKS = ("top_n", "refresh", "rrd_sample")
MIB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=["5000x20000", "25000x28000", "100000x50000"],
        help="USERSxITEMS sizes, smallest first",
    )
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--chunk-size", type=int, default=1024, help="users per chunk")
    parser.add_argument(
        "--chunk-sweep",
        nargs="*",
        type=int,
        default=None,
        help="also run every task at --sweep-size with these chunk sizes (default 256 1024 4096)",
    )
    parser.add_argument("--sweep-size", default="25000x28000")
    parser.add_argument("--top-n", type=int, default=500, help="RRD list length N")
    parser.add_argument("--epochs", type=int, default=10, help="BD epochs per refresh")
    parser.add_argument("--rrd-epochs", type=int, default=2, help="RRD sample() calls to time")
    parser.add_argument("--mean-activity", type=float, default=50.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write all results here")
    parser.add_argument("--world-size", type=int, default=1, help="also measure each rank's block")
    parser.add_argument("--worker", nargs=5, metavar=("TASK", "USERS", "ITEMS", "CHUNK", "RANK"),
                        help="RANK -1: every user, as one process")
    args = parser.parse_args(argv)
    if args.chunk_sweep == []:
        args.chunk_sweep = [256, 1024, 4096]
    return args


# ------------------------------------------------------------------------------ worker side


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def peak_bytes() -> int:
    """Peak resident set size so far (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak() -> bool:
    """Lowers the peak-RSS mark to the current RSS (Linux >= 4.0); False where refused."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


class TimedScores:
    """Wraps a score function and adds up the seconds spent in it."""

    def __init__(self, score_fn) -> None:
        self.score_fn, self.seconds = score_fn, 0.0

    def __call__(self, users):
        start = time.perf_counter()
        scores = self.score_fn(users)
        self.seconds += time.perf_counter() - start
        return scores


def nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def measure(task: str, n_users: int, n_items: int, chunk: int, args: argparse.Namespace,
            rank: int = -1) -> dict:
    """Runs one operation on fresh synthetic data, for every user (``rank`` -1) or for the block
    of ``rank`` among ``--world-size``, and returns its time and memory figures."""
    import numpy as np
    import torch

    import recbole_kd
    from recbole_kd.model.sampler.rank_discrepancy import RankDiscrepancySampler
    from recbole_kd.model.sampler.relaxed_ranking import RelaxedRankingSampler, teacher_top_n
    from recbole_kd.sharding import chunk_blocks
    from recbole_kd.tools.synthetic import LowRankScores, popularity_bias, synthetic_interactions

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    matrix = synthetic_interactions(
        n_users, n_items, mean_activity=args.mean_activity, seed=args.seed
    )
    bias = popularity_bias(matrix)
    users = range(n_users)
    if rank >= 0:
        users = chunk_blocks(np.diff(matrix.indptr), chunk, args.world_size)[rank]
    teacher = TimedScores(LowRankScores(*matrix.shape, dim=64, seed=args.seed + 1, item_bias=bias))
    student = TimedScores(LowRankScores(*matrix.shape, dim=16, seed=args.seed + 2, item_bias=bias))
    result = {
        "task": task,
        "users": n_users,
        "items": n_items,
        "chunk": chunk,
        "rank": rank,
        "block_users": len(users),
        "block_nnz": int(matrix.indptr[users.stop] - matrix.indptr[users.start]),
        "nnz": int(matrix.nnz),
        "max_activity": int(max(matrix.indptr[1:] - matrix.indptr[:-1])),
        "data_seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
        "load": os.getloadavg()[0],
        "package": str(Path(recbole_kd.__file__).parent),
    }
    kept: list = []
    if task == "rrd_sample":  # the lists it samples from, built outside the measurement
        start = time.perf_counter()
        top = teacher_top_n(teacher, matrix, args.top_n, chunk, "cpu", users=users)
        result["setup_seconds"] = time.perf_counter() - start
    elif task == "refresh":
        sampler = RankDiscrepancySampler(matrix, matrix.shape[1], chunk_size=chunk, users=users)
    result["peak_reset"] = reset_peak()
    result["baseline_rss"] = rss_bytes()
    before = peak_bytes()
    teacher.seconds = 0.0
    start, cpu_start = time.perf_counter(), time.process_time()
    if task == "top_n":
        top = teacher_top_n(teacher, matrix, args.top_n, chunk, "cpu", users=users)
        kept = [top]
    elif task == "refresh":
        sampler.refresh(teacher, student, epochs=args.epochs)
        kept = [sampler.pool_student, sampler.pool_teacher, sampler.offsets]
    else:
        rrd = RelaxedRankingSampler(top, matrix, matrix.shape[1], 40, 40, chunk_size=chunk,
                                    users=users)
        result["build_seconds"] = time.perf_counter() - start
        epoch_start = time.perf_counter()
        for _ in range(args.rrd_epochs):
            rrd.sample()
        result["epoch_seconds"] = (time.perf_counter() - epoch_start) / args.rrd_epochs
        kept = [rrd.interesting, rrd.uninteresting]
    result["seconds"] = time.perf_counter() - start
    result["cpu_seconds"] = time.process_time() - cpu_start
    result["scoring_seconds"] = teacher.seconds + student.seconds
    result["peak_growth"] = peak_bytes() - before
    result["kept"] = nbytes(*kept)
    result["retained"] = rss_bytes() - result["baseline_rss"]
    return result


# ------------------------------------------------------------------------------ parent side


def parse_size(size: str) -> tuple[int, int]:
    users, items = size.lower().split("x")
    return int(users), int(items)


def run_measurement(
    task: str, size: str, chunk: int, args: argparse.Namespace, argv: list[str], rank: int = -1
) -> dict:
    """One measurement in a fresh interpreter, bounded by ``--timeout``."""
    users, items = parse_size(size)
    worker = ["--worker", task, str(users), str(items), str(chunk), str(rank)]
    command = [sys.executable, __file__, *argv, *worker]
    base = {"task": task, "users": users, "items": items, "chunk": chunk, "rank": rank}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=args.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {**base, "status": f"timeout > {args.timeout:.0f} s"}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["?"]
        return {**base, "status": f"failed ({done.returncode}): {tail[0][:80]}"}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "status": "ok"}


def mib(value: float) -> str:
    return f"{value / MIB:,.0f}"


def table(results: list[dict]) -> str:
    """Markdown table of every measurement, failed ones included."""
    header = [
        "task", "users x items", "chunk", "interactions", "seconds", "of which scoring",
        "RRD epoch s", "peak growth MiB", "kept MiB", "baseline RSS MiB", "load",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        size = f"{r['users']:,} x {r['items']:,}"
        if r["status"] != "ok":
            cells = [r["task"], size, str(r["chunk"]), r["status"]] + [""] * 7
        else:
            cells = [
                r["task"], size, str(r["chunk"]), f"{r['nnz']:,}", f"{r['seconds']:.1f}",
                f"{r['scoring_seconds']:.1f}",
                f"{r['epoch_seconds']:.1f}" if "epoch_seconds" in r else "",
                mib(r["peak_growth"]), mib(r["kept"]), mib(r["baseline_rss"]),
                f"{r['load']:.1f}",
            ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def own_seconds(result: dict) -> float:
    """The sampler's own seconds: one RRD epoch, or the operation minus the stand-in scoring."""
    if "epoch_seconds" in result:
        return result["epoch_seconds"]
    return result["seconds"] - result["scoring_seconds"]


def kept_per(result: dict) -> str:
    """What is kept, per unit it grows with: BD pools per interaction, RRD lists per user."""
    if result["task"] == "refresh":
        return f"{result['kept'] / result['nnz']:.1f} B per interaction"
    return f"{result['kept'] / result['users']:.0f} B per user"


def growth(results: list[dict]) -> str:
    """How time and memory grow with size, per task, at the first chunk size measured.

    Time per user-item is constant if cost is linear in users x items (one pass over every
    score); time per user-item-log2(items) is constant for a full sort of every user's items.
    Temporaries (peak growth minus what is kept) per chunk-item are constant if they are a few
    chunk x items matrices.
    """
    lines = []
    for task in TASKS:
        rows = [r for r in results if r["task"] == task and r["status"] == "ok"]
        rows = sorted(
            (r for r in rows if r["chunk"] == rows[0]["chunk"]),
            key=lambda r: r["users"] * r["items"],
        )
        for r in rows:
            cells = r["users"] * r["items"]
            seconds = own_seconds(r)
            lines.append(
                f"- {task} {r['users']:,} x {r['items']:,} (chunk {r['chunk']}): "
                f"{seconds / cells * 1e9:.1f} ns per user-item, "
                f"{seconds / (cells * math.log2(r['items'])) * 1e9:.2f} ns per "
                f"user-item-log2(items); temporaries "
                f"{(r['peak_growth'] - r['kept']) / (r['chunk'] * r['items']):.1f} B per "
                f"chunk-item; kept {kept_per(r)}"
            )
        for small, large in zip(rows, rows[1:]):
            cells = large["users"] * large["items"] / (small["users"] * small["items"])
            sort = cells * math.log(large["items"]) / math.log(small["items"])
            lines.append(
                f"  - x{cells:.1f} users*items (x{sort:.1f} with log items): time "
                f"x{own_seconds(large) / own_seconds(small):.2f}, peak growth "
                f"x{large['peak_growth'] / max(small['peak_growth'], 1):.2f} "
                f"(items x{large['items'] / small['items']:.2f}, interactions "
                f"x{large['nnz'] / small['nnz']:.2f})"
            )
    return "\n".join(lines)


def sharded_table(results: list[dict], world_size: int) -> str:
    """Each operation over every user in one process against the slowest of ``world_size``
    ranks' blocks: CPU seconds (scoring included) and what is kept."""
    header = ["task", "users x items", "one process CPU s", "ranks' CPU s", "slowest / one",
              "kept MiB: one", "kept MiB: largest rank", "peak growth MiB: one / largest rank",
              "load"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for one in (r for r in results if r["rank"] == -1 and r["status"] == "ok"):
        ranks = [r for r in results if r["rank"] >= 0 and r["status"] == "ok"
                 and (r["task"], r["users"], r["items"], r["chunk"])
                 == (one["task"], one["users"], one["items"], one["chunk"])]
        if len(ranks) != world_size:
            continue
        slowest = max(r["cpu_seconds"] for r in ranks)
        lines.append("| " + " | ".join([
            one["task"], f"{one['users']:,} x {one['items']:,}", f"{one['cpu_seconds']:.1f}",
            " / ".join(f"{r['cpu_seconds']:.1f}" for r in ranks),
            f"{slowest / one['cpu_seconds']:.2f}", mib(one["kept"]),
            mib(max(r["kept"] for r in ranks)),
            f"{mib(one['peak_growth'])} / {mib(max(r['peak_growth'] for r in ranks))}",
            " / ".join(f"{r['load']:.1f}" for r in [one, *ranks]),
        ]) + " |")
    return "\n".join(lines)


def main() -> None:
    argv = sys.argv[1:]
    args = parse_args(argv)
    if args.worker:
        task, users, items, chunk, rank = args.worker
        print(json.dumps(measure(task, int(users), int(items), int(chunk), args, int(rank))))
        return
    plan = [(task, size, args.chunk_size) for size in args.sizes for task in args.tasks]
    for chunk in args.chunk_sweep or []:
        plan += [(task, args.sweep_size, chunk) for task in args.tasks]
    plan = list(dict.fromkeys(plan))  # the sweep repeats the default chunk at its size
    ranks = [-1] + (list(range(args.world_size)) if args.world_size > 1 else [])
    results = []
    for task, size, chunk in plan:
        for rank in ranks:
            result = run_measurement(task, size, chunk, args, argv, rank)
            results.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)  # progress, partial results
    print(f"python benchmarks/{Path(__file__).name} {' '.join(argv)}\n")
    whole = [r for r in results if r["rank"] == -1]
    print(table(whole))
    print()
    print(growth(whole))
    if args.world_size > 1:
        print()
        print(sharded_table(results, args.world_size))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
