"""Training cost of every method against the student alone, on ml-100k and CiteULike-t.

Every measurement runs in a fresh process, so its peak memory (RSS) is its own. Epoch times
exclude evaluation; the first epoch (one-time work: the teacher's top-N lists, BD's first rank
refresh) is reported apart from the steady epochs, whose median is the row's figure; runs of
short epochs go on until their steady epochs take ``--min-seconds``. DE is measured twice: at
the start of the temperature schedule (tau = 1, every expert weighted) and at its end (tau -> 0,
one expert per entity), since its cost differs by an order of magnitude between the two.

    python benchmarks/speed.py [--epochs 4] [--min-seconds 3] [--datasets ml-100k citeulike-t]
        [--users-dat ../shared/data/citeulike-t/users.dat] [--set key=value ...]
        [--runs RD CD DCD HTD]    # only these models or rows (and the two models alone)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from recbole_kd.key_checks import settings_for
from recbole_kd.properties import parse_settings

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_USERS_DAT = os.path.join(HERE, "..", "..", "shared", "data", "citeulike-t", "users.dat")

MAX_EPOCHS = 40  # per run, however short its epochs

# (row name, model, settings); teacher and student alone come first and are saved for the rest.
RUNS = [
    ("student alone", "BPR", {"embedding_size": 20}),
    ("teacher alone", "BPR", {"embedding_size": 200}),
    ("DE (tau = 1)", "DE", {"de_tau_start": 1.0, "de_tau_end": 1.0}),
    ("DE (tau -> 0)", "DE", {"de_tau_start": 1e-10, "de_tau_end": 1e-10}),
    ("RRD", "RRD", {}),
    ("DERRD (tau = 1)", "DERRD", {"de_tau_start": 1.0, "de_tau_end": 1.0}),
    ("DERRD (tau -> 0)", "DERRD", {"de_tau_start": 1e-10, "de_tau_end": 1e-10}),
    ("BD", "BD", {}),
    # RD's first rd_dynamic_start_epoch epochs use the position weights alone; later epochs also
    # score rd_dynamic_samples items per training row: both phases are measured.
    ("RD (position weights)", "RD", {"rd_dynamic_start_epoch": 10**6}),
    ("RD (hybrid weights)", "RD", {"rd_dynamic_start_epoch": 0}),
    ("CD", "CD", {}),
    ("DCD", "DCD", {}),
    ("HTD", "HTD", {}),
]


def worker(spec: dict) -> dict:
    """Train ``spec['model']`` for a few epochs without evaluation; time each epoch."""
    from recbole.utils import init_logger

    from recbole_kd.config import KDConfig
    from recbole_kd.quick_start import prepare_run
    from recbole_kd.trainer.factory import create_trainer

    config = KDConfig(spec["model"], spec["dataset"], config_dict=spec["config"])
    init_logger(config)
    run = prepare_run(config)
    train_data, model = run.train_data, run.model
    trainer = create_trainer(run.config, model, run.loaders)
    # Short epochs are repeated until the steady ones add up to min_seconds, so that the cheap
    # rows (the ratios' denominators) are not a few noisy samples; BD stops before its next
    # refresh, which is accounted for apart.
    most = config["bd_update_epochs"] if hasattr(model, "sampler") else MAX_EPOCHS
    seconds = []
    while len(seconds) < max(config["epochs"], 2) or (
        sum(seconds[1:]) < spec["min_seconds"] and len(seconds) < most
    ):
        start = time.perf_counter()
        trainer._train_epoch(train_data, len(seconds))
        seconds.append(time.perf_counter() - start)
    out = {"first": seconds[0], "steady": statistics.median(seconds[1:]),
           "steady_epochs": len(seconds) - 1,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    sampler = getattr(model, "sampler", None)
    if sampler is not None:  # BD: refresh time, amortised over bd_update_epochs
        out["refresh"] = sampler.last_refresh_seconds
        out["steady"] += sampler.last_refresh_seconds / config["bd_update_epochs"]
    for distiller in getattr(model, "distillers", []):
        if hasattr(distiller, "top_n_seconds"):
            out["top_n"] = distiller.top_n_seconds
    if spec.get("save"):
        trainer._save_checkpoint(len(seconds) - 1, verbose=False, saved_model_file=spec["save"])
    return out


def measure(spec: dict) -> dict:
    result = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def dataset_settings(name: str, users_dat: str, workdir: str) -> tuple[str, dict] | None:
    if name != "citeulike-t":
        return name, {}
    if not os.path.isfile(users_dat):
        print(f"skipping citeulike-t: {users_dat} not found")
        return None
    from recbole_kd.tools.convert import convert_users_dat

    convert_users_dat(users_dat, workdir, name="citeulike-t")
    return "citeulike-t", {"data_path": workdir}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run, at least")
    parser.add_argument("--min-seconds", type=float, default=3.0,
                        help="steady epochs are added until they take this long (at most 40)")
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "citeulike-t"])
    parser.add_argument("--users-dat", default=DEFAULT_USERS_DAT)
    parser.add_argument("--set", nargs="*", default=[], help="key=value settings for every run")
    parser.add_argument("--runs", nargs="*", default=None,
                        help="rows or models to measure (default: every row)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.argv = sys.argv[:1]
        print(json.dumps(worker(json.loads(args.worker))))
        return
    workdir = tempfile.mkdtemp(prefix="recbole_kd_speed_")
    os.chdir(workdir)
    base = {"epochs": args.epochs, "show_progress": False, "state": "WARNING", "eval_step": 0,
            "teacher_config": {"embedding_size": 200}, "student_config": {"embedding_size": 20},
            **parse_settings(args.set)}
    for name in args.datasets:
        found = dataset_settings(name, args.users_dat, workdir)
        if found is None:
            continue
        dataset, data = found
        teacher_file = os.path.join(workdir, f"{dataset}-teacher.pth")
        student_file = os.path.join(workdir, f"{dataset}-student.pth")
        rows = {}
        for row, model, settings in RUNS:
            wanted = args.runs is None or {row, model} & set(args.runs)
            if not wanted and not row.endswith("alone"):
                continue
            # Each run takes the checkpoints its model accepts (BD both, the others the teacher).
            checkpoints = settings_for(model, {"teacher_checkpoint": teacher_file,
                                               "student_checkpoint": student_file})
            config = {**base, **data, **settings, **checkpoints}
            spec = {"model": model, "dataset": dataset, "config": config,
                    "min_seconds": args.min_seconds}
            if row.endswith("alone"):
                spec["save"] = teacher_file if row.startswith("teacher") else student_file
            rows[row] = measure(spec)
            print(f"{dataset}: {row}: {rows[row]}", file=sys.stderr)
        print_table(dataset, rows)


def print_table(dataset: str, rows: dict) -> None:
    student = rows["student alone"]["steady"]
    both = student + rows["teacher alone"]["steady"]
    print(f"\n{dataset}: training seconds per epoch (steady state, evaluation excluded)\n")
    print("| run | s/epoch | × student alone | first epoch s | one-time s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for row, out in rows.items():
        ratio = out["steady"] / (both if row == "BD" else student)
        against = " (vs teacher + student)" if row == "BD" else ""
        once = out.get("top_n", out.get("refresh"))
        print(f"| {row} | {out['steady']:.2f} | {ratio:.2f}{against} | {out['first']:.2f} | "
              f"{'' if once is None else f'{once:.2f}'} | {out['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
