"""Plugin keys, precedence and model lookup."""

from __future__ import annotations

import sys

import pytest

from recbole_kd.config import KDConfig
from recbole_kd.errors import KDConfigError
from recbole_kd.registry import get_model
from recbole_kd.trainer.factory import get_trainer
from tests.conftest import FAST, fast, make_config


def test_plugin_defaults_and_precedence(small_data, monkeypatch):
    config = make_config("DERRD", small_data)
    assert config["de_weight"] == 0.01 and config["rrd_top_n"] == 50  # model file, then dict
    monkeypatch.setattr(sys, "argv", ["run", "--rrd_weight=0.5"])
    assert make_config("DERRD", small_data)["rrd_weight"] == 0.5  # command line wins


@pytest.mark.parametrize(
    "key,value",
    [("de_weight", -1), ("de_tau_start", 0), ("rrd_temperature", -2.0),
     ("rrd_interesting", 0), ("bd_update_epochs", 0), ("bd_rank_convention", "other")],
)
def test_impossible_values_name_the_key(small_data, key, value):
    with pytest.raises(KDConfigError, match=key):
        make_config("DERRD", small_data, **{key: value})


def test_lookup_finds_plugin_models_first_then_recbole():
    assert get_model("DERRD").__module__ == "recbole_kd.model.derrd"
    assert get_model("BPR").__module__.startswith("recbole.model")
    assert get_trainer(None, get_model("DERRD")).__name__ == "KDTrainer"
    assert get_trainer(None, get_model("BD")).__name__ == "BDTrainer"
    with pytest.raises(KDConfigError, match="Unknown model 'BRP'"):
        get_model("BRP")


def test_a_property_file_leaves_other_methods_keys_to_their_runs(small_data, tmp_path):
    shared = tmp_path / "setup.yaml"
    shared.write_text("learning_rate: 0.002\nbd_tau: 2.0\nrrd_weight: 0.5\n")
    alone = KDConfig("BPR", config_file_list=[str(shared)],
                     config_dict={**FAST, "data_path": small_data})
    assert alone["learning_rate"] == 0.002 and "bd_tau" not in alone.final_config_dict
    bd = KDConfig("BD", config_file_list=[str(shared)],
                  config_dict={**fast("BD"), "data_path": small_data})
    assert bd["bd_tau"] == 2.0 and "rrd_weight" not in bd.final_config_dict
    # Set for the run itself, another method's key is refused as before.
    with pytest.raises(KDConfigError, match="'bd_tau' belongs to BD, not to BPR"):
        KDConfig("BPR", config_file_list=[str(shared)],
                 config_dict={**FAST, "data_path": small_data, "bd_tau": 2.0})
    # A misspelled key in a file is still refused.
    shared.write_text("bd_tua: 2.0\n")
    with pytest.raises(KDConfigError, match="Did you mean 'bd_tau'"):
        KDConfig("BD", config_file_list=[str(shared)],
                 config_dict={**fast("BD"), "data_path": small_data})
