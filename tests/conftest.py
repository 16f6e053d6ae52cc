"""Shared fixtures: a small slice of the ml-100k shipped with RecBole, and a clean work folder."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import sys

import numpy as np
import pytest
import recbole
import torch

from recbole_kd.config import KDConfig
from recbole_kd.key_checks import settings_for
from recbole_kd.quick_start import prepare_run
from recbole_kd.trainer.factory import create_trainer

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_ROWS = 20000  # of ml-100k's 100,000 interactions: ~400 users, ~1,300 items

# Fast, quiet, deterministic settings for one-epoch runs.
FAST = {
    "dataset": "ml-small",
    "epochs": 1,
    "show_progress": False,
    "state": "ERROR",
    "eval_batch_size": 409600,
    "train_batch_size": 2048,
    "reproducibility": True,
    "seed": 2020,
    "teacher_config": {"embedding_size": 32},
    "student_config": {"embedding_size": 8},
}
# Small sizes of the methods' own settings, for the methods they belong to.
METHOD_FAST = {"rrd_top_n": 50, "rrd_interesting": 5, "rrd_uninteresting": 5, "de_num_experts": 4}


def fast(model: str) -> dict:
    """FAST, with the small method settings that ``model`` accepts."""
    return {**FAST, **settings_for(model, METHOD_FAST)}

# Small sizes for each backbone, as teacher and as student.
BACKBONE_SIZES = {
    "BPR": ({"embedding_size": 32}, {"embedding_size": 8}),
    "LightGCN": ({"embedding_size": 32, "n_layers": 1}, {"embedding_size": 8, "n_layers": 1}),
    "NeuMF": (
        {"mf_embedding_size": 16, "mlp_embedding_size": 16, "mlp_hidden_size": [32, 16]},
        {"mf_embedding_size": 4, "mlp_embedding_size": 4, "mlp_hidden_size": [8, 4]},
    ),
}


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> str:
    """A data folder holding ``ml-small``: the first rows of the shipped ml-100k."""
    source = os.path.join(
        os.path.dirname(recbole.__file__), "dataset_example", "ml-100k", "ml-100k.inter"
    )
    root = tmp_path_factory.mktemp("data")
    os.makedirs(root / "ml-small")
    with open(source, encoding="utf-8") as src, open(
        root / "ml-small" / "ml-small.inter", "w", encoding="utf-8"
    ) as dst:
        for index, line in enumerate(src):
            if index > SMALL_ROWS:
                break
            dst.write(line)
    return str(root)


@contextlib.contextmanager
def working_in(folder):
    """Run the block with ``folder`` as the working directory (RecBole writes under it)."""
    here = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)


@pytest.fixture(scope="session")
def stock_teacher(small_data, tmp_path_factory) -> str:
    """A BPR checkpoint written by stock RecBole on the small data (seed 2020, 32 dimensions)."""
    from recbole.quick_start import run_recbole

    folder = tmp_path_factory.mktemp("stock")
    with working_in(folder):
        run_recbole("BPR", config_dict={**FAST, "data_path": small_data, "embedding_size": 32},
                    saved=True)
    (path,) = (folder / "saved").glob("BPR-*.pth")
    return str(path)


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch):
    """RecBole writes log/, saved/ and log_tensorboard/ under the working directory, and parses
    every ``--key=value`` in sys.argv: run each test in its own folder with a bare argv."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    return tmp_path


def make_config(model: str, small_data: str, **overrides) -> KDConfig:
    """A KDConfig for ``model`` on the small data with the FAST settings and ``overrides``."""
    return KDConfig(model, config_dict={**fast(model), "data_path": small_data, **overrides})


def build(config: KDConfig) -> tuple:
    """(train, valid, test loaders, model) of a prepared run of ``config``."""
    run = prepare_run(config)
    return (*run.loaders, run.model)


def trainer_for(config: KDConfig, model, loaders=()):
    """The trainer the package builds for ``model`` (its protocol, optimizer and mixins)."""
    return create_trainer(config, model, loaders)


def pair_overrides(teacher: str, student: str) -> dict:
    return {
        "teacher_model": teacher,
        "teacher_config": BACKBONE_SIZES[teacher][0],
        "student_model": student,
        "student_config": BACKBONE_SIZES[student][1],
    }


def assert_same(got, expected, where: str = "") -> None:
    """Bit-for-bit equality of nested checkpoint contents: dicts, sequences, tensors, arrays."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), (where, set(got) ^ set(expected))
        for key in expected:
            assert_same(got[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(expected), where
        for index, (a, b) in enumerate(zip(got, expected)):
            assert_same(a, b, f"{where}[{index}]")
    elif isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == expected.dtype, where
        assert torch.equal(got, expected), where
    elif isinstance(expected, np.ndarray):
        assert np.array_equal(got, expected), where
    else:
        assert got == expected, (where, got, expected)


def digests(folder: str) -> dict[str, str]:
    """SHA-1 of every file under ``folder``, by path relative to it."""
    found = {}
    for path in glob.glob(os.path.join(folder, "**"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = hashlib.sha1(f.read()).hexdigest()
    return found
