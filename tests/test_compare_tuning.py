"""--compare --tune: the same budget of trials for every contender, chosen on validation, cached."""

from __future__ import annotations

import json

import pytest
import yaml

from recbole_kd.tools import compare as compare_module
from recbole_kd.tools.compare import compare
from recbole_kd.tools.compare_tuning import search_space
from tests.conftest import FAST, pair_overrides

pytest.importorskip("hyperopt")


def tuned_comparison(small_data, workdir, progress=None):
    (workdir / "pair.yaml").write_text(yaml.safe_dump(pair_overrides("BPR", "BPR")))
    settings = {k: v for k, v in FAST.items()
                if k not in ("dataset", "teacher_config", "student_config")}
    settings.update(data_path=small_data, rrd_top_n=50, rrd_interesting=5, rrd_uninteresting=5)
    return compare("ml-small", str(workdir / "pair.yaml"), seeds=1, baselines=["Pop"],
                   methods=["RRD"], results_dir=str(workdir / "out"), settings=settings,
                   progress=progress or (lambda line: None), tune=2)


def test_every_contender_gets_the_budget_and_its_best_validation_trial(small_data, workdir):
    table = tuned_comparison(small_data, workdir)
    store = json.loads((workdir / "out" / "tuning.json").read_text())
    assert set(store) == {"teacher alone", "student alone", "Pop", "RRD"}
    assert store["Pop"]["chosen"] == {} and store["Pop"]["trials"] == {}  # nothing to tune
    for name in ("teacher alone", "student alone", "RRD"):
        trials = store[name]["trials"]
        assert 1 <= len(trials) <= 2  # two draws, which may coincide
        best = max(trials, key=lambda key: trials[key]["best_valid_score"])
        assert store[name]["chosen"] == json.loads(best)
    assert set(json.loads(next(iter(store["RRD"]["trials"])))) == {
        "learning_rate", "weight_decay", "rrd_weight"}
    assert "Settings chosen on validation" in table and "| RRD | learning_rate=" in table
    assert (workdir / "out" / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"


def test_an_interrupted_tuned_comparison_trains_no_trial_twice(small_data, workdir, monkeypatch):
    tuned_comparison(small_data, workdir)
    trained = []
    timed_run = compare_module.timed_run
    monkeypatch.setattr(compare_module, "timed_run",
                        lambda *args, **kwargs: trained.append(args[0]) or timed_run(*args, **kwargs))
    tuned_comparison(small_data, workdir)
    assert trained == []  # every trial and every run came from the results folder


def test_search_spaces_follow_the_model():
    assert search_space("BD").endswith("BD.hyper")
    assert search_space("LightGCN").endswith("alone.hyper")
    assert search_space("Pop") is None
