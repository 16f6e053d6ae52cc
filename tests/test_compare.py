"""The comparison command: baselines and distillation methods on one split, several seeds."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml
from recbole.data.interaction import Interaction

from recbole_kd.tools.compare import compare
from recbole_kd.tools.report import relative_summary
from recbole_kd.tools.result_store import Run
from recbole_kd.trainer.resumable import ResumableTrainer
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


def _compare_small(small_data, workdir, progress, config_files=None, baselines=("Pop",),
                   methods=("RRD", "BD"), **settings):
    pair = workdir / "pair.yaml"
    pair.write_text(yaml.safe_dump(pair_overrides("BPR", "BPR")))
    fast = {k: v for k, v in FAST.items()
            if k not in ("dataset", "teacher_config", "student_config")}
    return compare("ml-small", str(pair), seeds=1, baselines=baselines, methods=methods,
                   results_dir=str(workdir / "results"), progress=progress,
                   config_files=config_files, settings={**fast, "data_path": small_data, **settings})


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


def test_a_compare_folder_is_a_store_that_a_narrower_rerun_keeps(small_data, workdir):
    _compare_small(small_data, workdir, lambda line: None)
    everything = _rows(workdir)
    lines = []
    table = _compare_small(small_data, workdir, lines.append, baselines=(), methods=("RRD",))
    assert not any(" done" in line for line in lines)  # nothing trained again
    assert "| RRD |" in table and "| BD student |" not in table and "| Pop |" not in table
    assert _rows(workdir) == everything  # the runs it did not ask for keep their rows
    report = (workdir / "results" / "comparison.md").read_text()
    assert "| RRD |" in report and "| Pop |" not in report
    # Asked for again, a finished run is read back, never retrained.
    lines = []
    table = _compare_small(small_data, workdir, lines.append, methods=("BD", "RRD"))
    assert not any(" done" in line for line in lines) and "| BD teacher |" in table
    assert _rows(workdir) == everything


@pytest.mark.parametrize("option", ["baselines", "methods"])
def test_compare_refuses_a_contender_named_twice(small_data, workdir, option):
    names = {"baselines": ("Pop", "Pop"), "methods": ("RRD", "BD", "RRD")}[option]
    with pytest.raises(ValueError, match=f"--{option} names {names[0]} more than once"):
        _compare_small(small_data, workdir, lambda line: None, **{option: names})
    assert not (workdir / "results").exists()


def test_compare_refuses_a_results_folder_of_another_comparison(small_data, workdir):
    _compare_small(small_data, workdir, lambda line: None)
    with pytest.raises(ValueError, match="another comparison .*settings"):
        _compare_small(small_data, workdir, lambda line: None, learning_rate=0.01)


def test_the_same_property_files_elsewhere_continue_and_an_edited_one_is_refused(small_data,
                                                                                 workdir):
    extra = workdir / "extra.yaml"
    extra.write_text("learning_rate: 0.002\n")
    _compare_small(small_data, workdir, lambda line: None, config_files=[str(extra)])
    moved = workdir / "moved"
    moved.mkdir()
    (moved / "extra.yaml").write_text(extra.read_text())
    lines = []
    _compare_small(small_data, workdir, lines.append, config_files=[str(moved / "extra.yaml")])
    assert sum("kept from" in line for line in lines) == 5  # BD: one line for both models
    assert not any(" done" in line for line in lines)
    (moved / "extra.yaml").write_text("learning_rate: 0.003\n")
    with pytest.raises(ValueError, match="another comparison .*config_files"):
        _compare_small(small_data, workdir, lambda line: None,
                       config_files=[str(moved / "extra.yaml")])


@pytest.mark.parametrize("stopped,name", [("BPR", "teacher alone"), ("DERRD", "DERRD")])
def test_a_run_cut_short_continues_from_its_resume_point(small_data, workdir, monkeypatch,
                                                         stopped, name):
    pair = workdir / "pair.yaml"
    pair.write_text(yaml.safe_dump(pair_overrides("BPR", "BPR")))
    fast = {k: v for k, v in FAST.items() if k not in ("dataset", "teacher_config", "student_config")}

    def derrd(folder, progress=lambda line: None):
        compare("ml-small", str(pair), seeds=1, baselines=[], methods=["DERRD"],
                results_dir=str(workdir / folder), progress=progress,
                settings={**fast, "data_path": small_data, "epochs": 3})
        with open(workdir / folder / "runs.csv") as f:
            return {row["run"]: row for row in csv.DictReader(f)}

    save = ResumableTrainer._save_resume_point

    def save_then_stop(self, epoch, *args, **kwargs):
        save(self, epoch, *args, **kwargs)
        if epoch == 1 and type(self.model).__name__ == stopped:  # the first such run stops
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # (undo() would also undo the work folder's chdir)
        patch.setattr(ResumableTrainer, "_save_resume_point", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            derrd("results")
    lines, trained = [], []
    train_epoch = ResumableTrainer._train_epoch
    with monkeypatch.context() as patch:
        patch.setattr(ResumableTrainer, "_train_epoch", lambda self, data, epoch, *a, **k:
                      trained.append(epoch) or train_epoch(self, data, epoch, *a, **k))
        resumed = derrd("results", lines.append)
    assert any(line.startswith(f"seed 2020: {name} continues from") for line in lines)
    # The run cut short trains its last epoch only; the runs after it, every epoch.
    assert trained == ([2] if stopped == "DERRD" else [2, 0, 1, 2, 0, 1, 2])
    whole = derrd("uninterrupted")
    for row in (*resumed.values(), *whole.values()):
        del row["train_seconds_per_epoch"], row["scoring_ms_per_1000_users"], row["saved_model_file"]
    assert resumed == whole and resumed[name]["epochs"] == "3"


def test_scoring_cost_is_measured_for_models_without_full_sort_predict(small_data):
    """NeuMF, a default baseline, scores by ``predict`` only, as RecBole evaluates it."""

    from recbole_kd.tools.compare import all_item_scores, inference_cost
    from tests.conftest import build, make_config

    model = build(make_config("NeuMF", small_data))[3].eval()
    users = torch.tensor([1, 5])
    with torch.no_grad():
        scores = all_item_scores(model, Interaction({model.USER_ID: users})).view(2, -1)
        one = model.predict(Interaction({model.USER_ID: torch.tensor([5, 5]),
                                         model.ITEM_ID: torch.tensor([3, 7])}))
    assert scores.shape == (2, model.n_items) and torch.allclose(scores[1, [3, 7]], one)
    params, milliseconds = inference_cost(
        model, Interaction({model.USER_ID: torch.arange(1, 21)}), repeats=1)
    assert params == sum(p.numel() for p in model.parameters()) and milliseconds > 0


def test_a_sequential_pair_is_compared_with_sequential_baselines():
    from recbole_kd.properties import read_pair
    from recbole_kd.tools.compare import (
        DEFAULT_BASELINES,
        DEFAULT_SEQUENTIAL_BASELINES,
        default_baselines,
    )

    assert default_baselines(read_pair("sasrec-gru4rec")) == DEFAULT_SEQUENTIAL_BASELINES
    assert default_baselines(read_pair("bpr200-bpr20")) == DEFAULT_BASELINES


def test_one_seed_is_reported_without_a_spread_and_charts_show_gains(workdir):
    from recbole_kd.tools.report import gains, plot, plot_tradeoff, seeds_label, summarize

    runs = [Run("teacher alone", 1, {"hit@5": 0.6}, 1.0, 1, params=100),
            Run("student alone", 1, {"hit@5": 0.4}, 1.0, 1, params=10),
            Run("RRD", 1, {"hit@5": 0.5}, 2.0, 1, params=10),
            Run("DE", 1, {"hit@5": 0.5}, 3.0, 1, params=10)]
    assert "±" not in summarize(runs, ["hit@5"]) + relative_summary(runs, ["hit@5"])
    assert "| RRD | 1.250 |" in relative_summary(runs, ["hit@5"])
    assert gains(runs, "hit@5") == {"teacher alone": [pytest.approx(0.5)], "student alone": [0.0],
                                    "RRD": [pytest.approx(0.25)], "DE": [pytest.approx(0.25)]}
    assert seeds_label(runs) == "seed 1"
    assert seeds_label(runs + [Run("RRD", 3, {"hit@5": 0.5}, 2.0, 1)]) == "seeds 1-3"
    plot(runs, "hit@5", str(workdir / "gains.png"))
    plot_tradeoff(runs, "hit@5", str(workdir / "tradeoff.png"), "data, seed 1")
    assert (workdir / "gains.png").stat().st_size > 1000
    assert (workdir / "tradeoff.png").stat().st_size > 1000
