"""Plugin keys, precedence and model lookup."""

from __future__ import annotations

import sys

import pytest

from recbole_kd.backbone import BackboneError
from recbole_kd.config import KDConfigError
from recbole_kd.quick_start import build
from recbole_kd.utils import get_model, get_trainer
from tests.conftest import make_config


def test_plugin_defaults_and_precedence(small_data, monkeypatch):
    config = make_config("DERRD", small_data)
    assert config["de_weight"] == 0.01 and config["rrd_top_n"] == 50  # model file, then dict
    monkeypatch.setattr(sys, "argv", ["run", "--rrd_weight=0.5"])
    assert make_config("DERRD", small_data)["rrd_weight"] == 0.5  # command line wins


def test_misspelled_plugin_key_names_the_fix(small_data):
    with pytest.raises(KDConfigError, match="'rrd_wieght'.*Did you mean 'rrd_weight'"):
        make_config("DERRD", small_data, rrd_wieght=0.1)


@pytest.mark.parametrize(
    "key,value",
    [("de_weight", -1), ("de_tau_start", 0), ("rrd_temperature", -2.0),
     ("rrd_interesting", 0), ("bd_update_epochs", 0), ("bd_rank_convention", "other")],
)
def test_impossible_values_name_the_key(small_data, key, value):
    with pytest.raises(KDConfigError, match=key):
        make_config("DERRD", small_data, **{key: value})


def test_top_n_longer_than_the_catalogue_names_the_key(small_data):
    config = make_config("RRD", small_data, rrd_top_n=100000)
    _, _, _, model = build(config)
    with pytest.raises(ValueError, match="rrd_top_n"):
        model.on_epoch_start(0)


def test_lookup_finds_plugin_models_first_then_recbole():
    assert get_model("DERRD").__module__ == "recbole_kd.model.derrd"
    assert get_model("BPR").__module__.startswith("recbole.model")
    assert get_trainer(None, "DERRD").__name__ == "KDTrainer"
    with pytest.raises(ValueError, match="Unknown model 'BRP'"):
        get_model("BRP")


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"student_model": "SASRec"}, "not a RecBole general recommender"),
        ({"teacher_model": "MultiVAE"}, "DE needs user and item representations"),
        ({"teacher_model": "DiffRec"}, "whole user rows"),
        ({"student_model": "Pop"}, "trained by gradient"),
        ({"student_model": "Nope"}, "Unknown model 'Nope'"),
    ],
)
def test_unusable_teacher_or_student_is_named_before_training(small_data, workdir, overrides,
                                                             message):
    config = make_config("DERRD", small_data, **overrides)
    with pytest.raises((BackboneError, ValueError), match=message):
        build(config)
    assert not list(workdir.glob("saved/teacher-*")), "a teacher was trained for nothing"
