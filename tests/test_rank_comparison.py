"""Per-user ranks of held-out items under two models, their comparison and plot."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from recbole_kd.config import KDConfig
from recbole_kd.data import build_split
from recbole_kd.errors import CheckpointError
from recbole_kd.properties import properties_dir
from recbole_kd.quick_start import run_recbole_kd
from recbole_kd.tools.convert import convert_fixed_split
from recbole_kd.tools.rank_comparison import (
    checkpoint_ranks,
    compare_ranks,
    held_out_pairs,
    held_out_ranks,
    main,
    plot_rank_differences,
)
from tests.conftest import FAST

ITEMS = ["i1", "i2", "i3", "i4", "i5", "i6"]
# user: (train items, valid item, test item)
SPLIT = {
    "u1": (["i1", "i2"], "i3", "i4"),
    "u2": (["i3", "i4"], "i5", "i1"),
    "u3": (["i5"], "i6", "i2"),
    "u4": (["i6"], "i1", "i3"),
}
# Scores over ITEMS. Training items score highest, so ranks that ignored the exclusion would
# differ; B ties u2's test item with i2, which counts against it.
SCORES_A = {
    "u1": [9, 8, 7, 1, 2, 3],  # i4 among i4 i5 i6: 3rd (4th with the valid i3)
    "u2": [5, 1, 9, 9, 0, 1],  # i1 among i1 i2 i6: 1st (1st with i5)
    "u3": [5, 4, 1, 1, 9, 6],  # i2 among i1 i2 i3 i4: 2nd (3rd with i6)
    "u4": [2, 5, 3, 1, 0, 9],  # i3 among i2 i3 i4 i5: 2nd (2nd with i1)
}
SCORES_B = {
    "u1": [9, 8, 7, 5, 2, 3],  # 1st (2nd with i3)
    "u2": [2, 2, 9, 9, 0, 1],  # tied with i2: 2nd (2nd)
    "u3": [5, 4, 1, 1, 9, 6],  # 2nd (3rd)
    "u4": [2, 1, 3, 1, 0, 9],  # 1st (1st)
}
RANKS_A = {"u1": 3, "u2": 1, "u3": 2, "u4": 2}
RANKS_B = {"u1": 1, "u2": 2, "u3": 2, "u4": 1}
RANKS_A_KEEP_VALID = {"u1": 4, "u2": 1, "u3": 3, "u4": 2}
RANKS_B_KEEP_VALID = {"u1": 2, "u2": 2, "u3": 3, "u4": 1}


class FixedScores(torch.nn.Module):
    """A model whose all-item scores are a fixed (users x items) matrix."""

    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.scores = scores

    def full_sort_predict(self, interaction) -> torch.Tensor:
        return self.scores[interaction["user_id"]].flatten()


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory):
    """(dataset, (train, valid, test)) of SPLIT, loaded by RecBole from benchmark files."""
    root = tmp_path_factory.mktemp("tiny")
    split_dir = root / "split"
    split_dir.mkdir()
    for column, part in enumerate(("train", "valid", "test")):
        rows = [
            f"{user}\t{item}\n"
            for user, parts in SPLIT.items()
            for item in (parts[0] if column == 0 else [parts[column]])
        ]
        (split_dir / f"{part}.tsv").write_text("user\titem\n" + "".join(rows))
    convert_fixed_split(str(split_dir), str(root / "data"), name="tiny")
    config = KDConfig(
        "BPR",
        "tiny",
        [f"{properties_dir()}/datasets/citeulike-t-loo.yaml"],
        {"data_path": str(root / "data"), "state": "ERROR"},
    )
    return build_split(config)


def fixed_model(dataset, table: dict[str, list[float]]) -> FixedScores:
    """Scores of ``table`` (user token -> scores of ITEMS) at RecBole's ids; padding item 0
    scores highest, to show it is never a candidate."""
    scores = torch.full((dataset.user_num, dataset.item_num), 100.0)
    items = dataset.token2id(dataset.iid_field, ITEMS)
    for user, row in table.items():
        scores[dataset.token2id(dataset.uid_field, user), items] = torch.tensor(
            row, dtype=torch.float
        )
    return FixedScores(scores)


def by_user(dataset, test, ranks: torch.Tensor) -> dict[str, int]:
    users, _ = held_out_pairs(test)
    return dict(zip(dataset.id2token(dataset.uid_field, users.numpy()).tolist(), ranks.tolist()))


@pytest.mark.parametrize("batch_size", [1, 3, 256])
def test_ranks_and_shares_match_hand_computed(tiny_split, batch_size):
    dataset, (train, valid, test) = tiny_split
    ranks_a = held_out_ranks(fixed_model(dataset, SCORES_A), test, (train, valid), batch_size)
    ranks_b = held_out_ranks(fixed_model(dataset, SCORES_B), test, (train, valid), batch_size)
    assert by_user(dataset, test, ranks_a) == RANKS_A
    assert by_user(dataset, test, ranks_b) == RANKS_B
    assert compare_ranks(ranks_a, ranks_b) == {
        "b_better": 0.5,
        "equal": 0.25,
        "b_worse": 0.25,
        "pairs": 4,
    }


def test_training_items_are_excluded_validation_items_optionally(tiny_split):
    dataset, (train, _, test) = tiny_split
    ranks_a = held_out_ranks(fixed_model(dataset, SCORES_A), test, (train,))
    ranks_b = held_out_ranks(fixed_model(dataset, SCORES_B), test, (train,))
    assert by_user(dataset, test, ranks_a) == RANKS_A_KEEP_VALID
    assert by_user(dataset, test, ranks_b) == RANKS_B_KEEP_VALID


def test_constant_scores_rank_last(tiny_split):
    # Ties count against the held-out item: rank = number of candidates.
    dataset, (train, valid, test) = tiny_split
    flat = fixed_model(dataset, {user: [1.0] * len(ITEMS) for user in SPLIT})
    ranks = held_out_ranks(flat, test, (train, valid))
    candidates = {user: len(ITEMS) - len(parts[0]) - 1 for user, parts in SPLIT.items()}
    assert by_user(dataset, test, ranks) == candidates


def test_compare_ranks_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="shape"):
        compare_ranks(torch.tensor([1, 2]), torch.tensor([1, 2, 3]))


def test_plot_writes_png_and_needs_matplotlib(workdir, monkeypatch):
    pytest.importorskip("matplotlib")
    ranks_a = torch.tensor([1, 5, 300, 2, 2, 17])
    ranks_b = torch.tensor([3, 1, 20, 2, 9, 17])
    path = plot_rank_differences(ranks_a, ranks_b, str(workdir / "d.png"), ("teacher", "student"))
    assert (workdir / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path == str(workdir / "d.png")
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"recbole_kd\[plot\]"):
        plot_rank_differences(ranks_a, ranks_b, str(workdir / "e.png"))


def train_checkpoint(small_data: str, folder: str, **overrides) -> dict:
    config = {**FAST, "data_path": small_data, "checkpoint_dir": folder, **overrides}
    return run_recbole_kd("BPR", config_dict=config)


def test_checkpoint_cli_on_ml_small(small_data, workdir, capsys):
    teacher = train_checkpoint(small_data, "teacher", embedding_size=32)
    student = train_checkpoint(small_data, "student", embedding_size=8)
    # The ranks reproduce RecBole's own test Recall@10 (users' means of rank <= 10, averaged).
    ranks, pairs = checkpoint_ranks(teacher["saved_model_file"])
    _, users = np.unique(pairs[:, 0], return_inverse=True)
    hit = (ranks <= 10).double().numpy()
    recall = np.mean(np.bincount(users, weights=hit) / np.bincount(users))
    assert recall == pytest.approx(teacher["test_result"]["recall@10"], abs=6e-5)

    png = workdir / "differences.png"
    main([teacher["saved_model_file"], student["saved_model_file"], "--png", str(png)])
    printed = dict(line.split(":") for line in capsys.readouterr().out.strip().splitlines())
    assert int(printed["held-out pairs"]) == len(ranks)
    shares = [float(printed[key]) for key in ("B ranks better", "equal", "B ranks worse")]
    assert sum(shares) == pytest.approx(1, abs=3e-4) and min(shares) >= 0
    assert png.read_bytes()[:4] == b"\x89PNG"

    other_split = train_checkpoint(small_data, "other", embedding_size=8, seed=7)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main([teacher["saved_model_file"], other_split["saved_model_file"]])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "same split" in error and "Traceback" not in error
    with pytest.raises(CheckpointError, match="same split"):
        main([teacher["saved_model_file"], other_split["saved_model_file"], "--debug"])
