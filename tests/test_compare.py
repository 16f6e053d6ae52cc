"""The comparison command: baselines and distillation methods on one split, several seeds."""

from __future__ import annotations

import csv

import pytest
import yaml

from recbole_kd.tools.compare import compare
from recbole_kd.tools.report import relative_summary
from recbole_kd.tools.result_store import Run
from recbole_kd.trainer import KDTrainer
from tests.conftest import FAST, pair_overrides


def test_compare_writes_table_csv_and_chart(small_data, workdir):
    pair = workdir / "pair.yaml"
    pair.write_text(yaml.safe_dump(pair_overrides("BPR", "BPR")))
    settings = {k: v for k, v in FAST.items()
                if k not in ("dataset", "teacher_config", "student_config")}
    lines = []
    table = compare("ml-small", str(pair), seeds=2, baselines=["Pop"], methods=["RRD", "BD"],
                    results_dir=str(workdir / "results"),
                    settings={**settings, "data_path": small_data}, progress=lines.append)
    names = ["teacher alone", "student alone", "Pop", "RRD", "BD student", "BD teacher"]
    for name in names:
        assert f"| {name} |" in table
    assert " ± " in table
    assert "ndcg@10 × student alone" in table
    assert "| student alone | 1.000 ± 0.000 |" in table
    assert "| BD teacher × teacher alone |" in table
    with open(workdir / "results" / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(names)
    assert {row["seed"] for row in rows} == {"2020", "2021"}
    # The seeds differ, so the metrics of a model trained twice differ too.
    teacher = [row for row in rows if row["run"] == "teacher alone"]
    assert teacher[0]["ndcg@10"] != teacher[1]["ndcg@10"]
    assert int(teacher[0]["params"]) > int(rows[1]["params"])  # teacher larger than student
    assert (workdir / "results" / "comparison.png").stat().st_size > 1000
    assert sum("done" in line for line in lines) == 2 * 5  # one progress line per run


def test_relative_summary_divides_by_the_same_seeds_student():
    runs = [Run("student alone", 1, {"hit@5": 0.4}, 1.0, 1), Run("DERRD", 1, {"hit@5": 0.5}, 1.0, 1),
            Run("student alone", 2, {"hit@5": 0.5}, 1.0, 1), Run("DERRD", 2, {"hit@5": 0.5}, 1.0, 1)]
    table = relative_summary(runs, ["hit@5"])
    assert "| DERRD | 1.125 ± 0.177 |" in table  # mean and std of 1.25 and 1.0


def _compare_small(small_data, workdir, progress, **settings):
    pair = workdir / "pair.yaml"
    pair.write_text(yaml.safe_dump(pair_overrides("BPR", "BPR")))
    fast = {k: v for k, v in FAST.items()
            if k not in ("dataset", "teacher_config", "student_config")}
    return compare("ml-small", str(pair), seeds=1, baselines=["Pop"], methods=["RRD", "BD"],
                   results_dir=str(workdir / "results"), progress=progress,
                   settings={**fast, "data_path": small_data, **settings})


def _rows(workdir) -> dict:
    with open(workdir / "results" / "runs.csv") as f:
        return {row["run"]: row for row in csv.DictReader(f)}


def test_interrupted_compare_trains_only_the_missing_runs(small_data, workdir):
    def interrupt_at_bd(line):
        if line.startswith("seed 2020: BD student (BD)"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _compare_small(small_data, workdir, interrupt_at_bd)
    first = _rows(workdir)
    assert list(first) == ["teacher alone", "student alone", "Pop", "RRD"]

    lines = []
    table = _compare_small(small_data, workdir, lines.append)
    assert sum("kept from" in line for line in lines) == 4
    assert [line for line in lines if "done" in line] == [
        line for line in lines if line.startswith("seed 2020: BD student done")]
    rows = _rows(workdir)
    assert list(rows) == ["teacher alone", "student alone", "Pop", "RRD", "BD student",
                          "BD teacher"]
    assert rows["RRD"] == first["RRD"]
    assert "| BD teacher |" in table


def test_compare_refuses_a_results_folder_of_another_comparison(small_data, workdir):
    _compare_small(small_data, workdir, lambda line: None)
    with pytest.raises(ValueError, match="another comparison .*settings"):
        _compare_small(small_data, workdir, lambda line: None, learning_rate=0.01)


def test_a_run_cut_short_continues_from_its_resume_point(small_data, workdir, monkeypatch):
    pair = workdir / "pair.yaml"
    pair.write_text(yaml.safe_dump(pair_overrides("BPR", "BPR")))
    fast = {k: v for k, v in FAST.items() if k not in ("dataset", "teacher_config", "student_config")}

    def derrd(folder, progress=lambda line: None):
        compare("ml-small", str(pair), seeds=1, baselines=[], methods=["DERRD"],
                results_dir=str(workdir / folder), progress=progress,
                settings={**fast, "data_path": small_data, "epochs": 3})
        with open(workdir / folder / "runs.csv") as f:
            return {row["run"]: row for row in csv.DictReader(f)}

    save = KDTrainer._save_resume_point

    def save_then_stop(self, epoch, *args, **kwargs):
        save(self, epoch, *args, **kwargs)
        if epoch == 1:  # DERRD's second epoch is on disk: the comparison stops here
            raise KeyboardInterrupt

    monkeypatch.setattr(KDTrainer, "_save_resume_point", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        derrd("results")
    monkeypatch.undo()
    lines, trained = [], []
    train_epoch = KDTrainer._train_epoch
    monkeypatch.setattr(KDTrainer, "_train_epoch", lambda self, data, epoch, *args, **kwargs:
                        trained.append(epoch) or train_epoch(self, data, epoch, *args, **kwargs))
    resumed = derrd("results", lines.append)
    monkeypatch.undo()
    assert any(line.startswith("seed 2020: DERRD continues from") for line in lines)
    assert trained == [2]  # the models alone are kept; DERRD trains its last epoch only
    whole = derrd("uninterrupted")
    for row in (resumed["DERRD"], whole["DERRD"]):
        del row["train_seconds_per_epoch"], row["scoring_ms_per_1000_users"], row["saved_model_file"]
    assert resumed["DERRD"] == whole["DERRD"] and resumed["DERRD"]["epochs"] == "3"
