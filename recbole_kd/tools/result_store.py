"""The comparison's runs on disk: ``runs.csv`` is a store of every run the folder's comparison
ever finished. It is rewritten after every run, so that an interrupted comparison started again
trains only the runs it lacks, and a rerun that asks for fewer or other contenders keeps the rows
of the others."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass

from recbole_kd.errors import KDConfigError

# runs.csv columns after the run, the seed and the test metrics.
CSV_FIELDS = ("train_seconds_per_epoch", "epochs", "params", "scoring_ms_per_1000_users",
              "saved_model_file")


@dataclass
class Run:
    """One trained model's outcome."""

    name: str
    seed: int
    test: dict
    seconds_per_epoch: float
    epochs: int
    saved_model_file: str = ""
    params: int | None = None
    ms_per_1000_users: float | None = None


class Results:
    """The comparison's runs, saved to ``runs.csv`` after each one, so an interrupted comparison
    started again with the same command and results folder trains only what is missing.

    ``runs.csv`` keeps every run the folder holds, whether or not this command asked for it;
    :attr:`runs` holds this command's runs alone, for its report. ``comparison.json`` records
    what was compared (data set, pair, config files, settings); a folder holding another
    comparison is refused rather than mixed into it.
    """

    def __init__(self, results_dir: str, setup: dict):
        os.makedirs(results_dir, exist_ok=True)
        self.results_dir = results_dir
        self.runs_file = os.path.join(results_dir, "runs.csv")
        setup_file = os.path.join(results_dir, "comparison.json")
        setup = json.loads(json.dumps(setup, default=str))
        self.stored: list[Run] = []  # every run in runs.csv, this command's included
        if os.path.exists(self.runs_file) and os.path.exists(setup_file):
            stored = read_setup(setup_file)
            if stored != setup:
                changed = sorted(k for k in {*stored, *setup} if stored.get(k) != setup.get(k))
                raise KDConfigError(
                    f"{results_dir}/ holds the results of another comparison (its "
                    f"{', '.join(changed)} differ). Pass another --results folder, or delete "
                    f"{results_dir}/ to start afresh."
                )
            try:
                self.stored = read_runs(self.runs_file)
            except (KeyError, ValueError, csv.Error) as error:
                raise KDConfigError(
                    f"{self.runs_file} is damaged ({type(error).__name__}: {error}): delete it "
                    "(its runs train again) or pass another --results folder.") from None
        with open(setup_file, "w", encoding="utf-8") as f:
            json.dump(setup, f, indent=1)
        self.runs: list[Run] = []

    def kept(self, name: str, seed: int) -> list[Run]:
        """The stored run ``name`` of ``seed`` (BD: with its teacher), now part of this
        command's results; [] when it must be trained (absent, or its checkpoint is gone)."""
        found = [run for run in self.stored if run.seed == seed and (
            run.name == name or (name == "BD student" and run.name == "BD teacher"))]
        usable = found and all(not run.saved_model_file or os.path.exists(run.saved_model_file)
                               for run in found)
        if not usable:
            return []
        self.runs += found
        return found

    def checkpoint_dir(self, name: str, seed: int) -> str:
        """The folder of run ``name`` of ``seed``'s checkpoints: the resume point of a run cut
        short is found there when the comparison is started again."""
        return os.path.join(self.results_dir, "checkpoints", f"{name.replace(' ', '-')}-{seed}")

    def add(self, *runs: Run) -> None:
        """Record freshly trained ``runs``: each replaces a stored row of its name and seed
        (one whose checkpoint was gone), the others are appended."""
        self.runs += runs
        for run in runs:
            self.stored = [old for old in self.stored
                           if (old.name, old.seed) != (run.name, run.seed)]
        self.stored += runs
        self.save()

    def save(self) -> None:
        """Write every stored run to ``runs.csv``."""
        metrics = list(dict.fromkeys(m for run in self.stored for m in run.test))
        write_csv(self.stored, metrics, self.runs_file)


def read_setup(path: str) -> dict:
    """What a results folder's ``comparison.json`` says was compared."""
    try:
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
    except ValueError as error:
        stored = error
    if not isinstance(stored, dict):
        raise KDConfigError(
            f"{path} is damaged ({stored}): delete it and runs.csv beside it to start afresh, "
            "or pass another --results folder.")
    return stored


def write_csv(runs: list[Run], metrics: list[str], path: str) -> None:
    """One row per run, written to a temporary file and renamed: never a half-written file."""
    with open(path + ".partial", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "seed", *metrics, *CSV_FIELDS])
        for run in runs:
            writer.writerow([run.name, run.seed, *(run.test.get(m, "") for m in metrics),
                             f"{run.seconds_per_epoch:.4f}", run.epochs, run.params or "",
                             f"{run.ms_per_1000_users:.2f}" if run.ms_per_1000_users else "",
                             run.saved_model_file])
    os.replace(path + ".partial", path)


def read_runs(path: str) -> list[Run]:
    """The runs of a ``runs.csv`` written by :func:`write_csv`."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    runs = []
    for row in rows:
        metrics = {k: float(v) for k, v in row.items()
                   if k not in ("run", "seed", *CSV_FIELDS) and v != ""}
        runs.append(Run(
            row["run"], int(row["seed"]), metrics, float(row["train_seconds_per_epoch"]),
            int(row["epochs"]), row["saved_model_file"],
            int(row["params"]) if row["params"] else None,
            float(row["scoring_ms_per_1000_users"]) if row["scoring_ms_per_1000_users"] else None,
        ))
    return runs
