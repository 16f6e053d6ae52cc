"""RecBole's HyperTuning runs over recbole_kd models."""

from __future__ import annotations

import pytest

from recbole_kd.errors import KDConfigError
from recbole_kd.properties import pair_file, shipped_file
from tests.conftest import FAST

pytest.importorskip("hyperopt")


def test_two_trial_search_over_derrd(small_data, workdir):
    from recbole_kd.tuning import tune

    params = workdir / "derrd.hyper"
    params.write_text("rrd_weight choice [0.001,0.01]\n")
    settings = {k: v for k, v in FAST.items() if k != "dataset"}
    result = tune("DERRD", "ml-small", str(params), algo="exhaustive",
                  output_file=str(workdir / "out.txt"),
                  config_dict={**settings, "data_path": small_data})
    assert result["best_params"]["rrd_weight"] in (0.001, 0.01)
    assert "ndcg@10" in result["test_result"]
    assert (workdir / "out.txt").read_text().count("rrd_weight") == 2


def test_shipped_files_are_found_by_name():
    assert shipped_file("DERRD.hyper", "hyper").endswith("DERRD.hyper")
    assert pair_file("bpr200-bpr20").endswith("bpr200-bpr20.yaml")
    with pytest.raises(KDConfigError, match="bpr200-bpr20"):
        pair_file("bpr-typo")
