"""Per-user comparison of two models' ranks of the held-out items (the BD paper's observation).

Kang et al., "Bidirectional Distillation for Top-K Recommender System" (WWW 2021), note that a
small student ranks the held-out test item better than its large teacher for a sizeable share of
users. This module measures that share for any two RecBole checkpoints on the same split:

    python -m recbole_kd.tools.rank_comparison teacher.pth student.pth [--png differences.png]

A rank is 1 + the number of other candidate items scoring at least as high as the held-out item,
over all items except the padding item 0 and the user's known items (training items and, by
default, the validation items: the candidates of RecBole's own full-sort test evaluation, so the
share of ranks <= K reproduces its Recall@K). Ties count against the held-out item, so a model
that scores everything equally cannot look good. A user with several test items contributes one
(user, item) pair per item; the other test items stay among the candidates, as in RecBole.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_kd.errors import CheckpointError, user_errors
from recbole_kd.model.sampler.positives import csr_entries


def held_out_pairs(test) -> tuple[torch.Tensor, torch.Tensor]:
    """(users, items): the RecBole ids of ``test``'s interactions, sorted by user then item."""
    users = test.inter_feat[test.uid_field].long()
    items = test.inter_feat[test.iid_field].long()
    order = np.lexsort((items.numpy(), users.numpy()))
    return users[order], items[order]


def _known_items(known: Sequence, n_users: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pointers, items): CSR lists of each user's known items; user u's are
    ``items[pointers[u]:pointers[u + 1]]``."""
    users = torch.cat([part.inter_feat[part.uid_field].long() for part in known])
    items = torch.cat([part.inter_feat[part.iid_field].long() for part in known])
    order = torch.argsort(users, stable=True)
    counts = torch.bincount(users, minlength=n_users)
    pointers = torch.zeros(n_users + 1, dtype=torch.long)
    pointers[1:] = torch.cumsum(counts, 0)
    return pointers, items[order]


def _batch_scores(model, uid_field: str, users: torch.Tensor, device) -> torch.Tensor:
    """(len(users), n_items) scores of ``model`` for ``users``."""
    interaction = Interaction({uid_field: users}).to(device)
    return model.full_sort_predict(interaction).view(len(users), -1)


@torch.no_grad()
def held_out_ranks(model, test, known: Sequence, batch_size: int = 256) -> torch.Tensor:
    """The rank (1 = best) of each held-out pair of ``test`` under ``model``, as a LongTensor.

    Pairs are in the order of :func:`held_out_pairs`. Candidates are all items except item 0
    (padding) and the user's items in the ``known`` parts (e.g. ``(train,)`` or
    ``(train, valid)``); ties with the held-out item count against it. ``model`` is any RecBole
    model (put in eval mode here); users are scored ``batch_size`` at a time with its
    ``full_sort_predict``.
    """
    model.eval()
    device = torch.device(getattr(model, "device", "cpu"))
    # Everything lives on the model's device: a GPU ranks a whole batch without copies.
    pair_users, pair_items = (t.to(device) for t in held_out_pairs(test))
    pointers, known_items = (t.to(device) for t in _known_items(known, test.user_num))
    batch_users = torch.unique(pair_users)  # sorted, so each batch's pairs are contiguous
    ranks = torch.empty(len(pair_users), dtype=torch.long, device=device)
    for start in range(0, len(batch_users), batch_size):
        users = batch_users[start : start + batch_size]
        scores = _batch_scores(model, test.uid_field, users, device)
        first = torch.searchsorted(pair_users, users[0]).item()
        last = torch.searchsorted(pair_users, users[-1], right=True).item()
        rows = torch.searchsorted(users, pair_users[first:last])
        items = pair_items[first:last]
        ranks[first:last] = _rank_in_rows(scores, users, rows, items, pointers, known_items)
    return ranks.cpu()


def _rank_in_rows(scores, users, rows, items, pointers, known_items) -> torch.Tensor:
    """Ranks of ``items`` in score rows ``rows`` (one row per user of ``users``)."""
    target = scores[rows, items]
    # Known items and padding leave the candidates; the target's score was read before.
    scores[_known_cells(users, pointers, known_items)] = -torch.inf
    scores[:, 0] = -torch.inf
    at_least = scores[rows] >= target.unsqueeze(1)
    at_least[torch.arange(len(rows), device=scores.device), items] = False  # not its own rival
    return 1 + at_least.sum(1)


def _known_cells(users, pointers, known_items) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, items) of every known item of ``users``, row i standing for ``users[i]``."""
    rows, entries = csr_entries(pointers, users)
    return rows, known_items[entries]


def compare_ranks(ranks_a: torch.Tensor, ranks_b: torch.Tensor) -> dict[str, float | int]:
    """Shares of held-out pairs that model B ranks better (strictly smaller rank), equally, or
    worse than model A; ``pairs`` is their number. The three shares sum to 1."""
    if ranks_a.shape != ranks_b.shape:
        raise CheckpointError(
            f"rank vectors differ in shape: {tuple(ranks_a.shape)} vs {tuple(ranks_b.shape)}"
        )
    n = len(ranks_a)
    if n == 0:
        raise CheckpointError("no held-out pairs to compare")
    return {
        "b_better": (ranks_b < ranks_a).sum().item() / n,
        "equal": (ranks_b == ranks_a).sum().item() / n,
        "b_worse": (ranks_b > ranks_a).sum().item() / n,
        "pairs": n,
    }


def plot_rank_differences(
    ranks_a: torch.Tensor, ranks_b: torch.Tensor, path: str, labels: tuple[str, str] = ("A", "B")
) -> str:
    """Write a histogram of rank(A) - rank(B) per held-out pair to ``path`` (PNG); return it.

    Positive differences are pairs B ranks better. Bins grow geometrically away from 0 and the
    axis is symmetric-log, since differences span 0 to the number of items.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plotting needs matplotlib: pip install 'recbole_kd[plot]' (or pip install matplotlib)"
        ) from None
    shares = compare_ranks(ranks_a, ranks_b)
    differences = (ranks_a - ranks_b).numpy()
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    axes.hist(differences, bins=_symmetric_log_bins(np.abs(differences).max()))
    axes.set_xscale("symlog", linthresh=1)
    axes.axvline(0, color="black", linewidth=0.8)
    a, b = labels
    axes.set_xlabel(f"rank under {a} - rank under {b}  (> 0: {b} ranks the held-out item higher)")
    axes.set_ylabel("held-out (user, item) pairs")
    axes.set_title(
        f"{b} vs {a}: better {shares['b_better']:.1%}, equal {shares['equal']:.1%}, "
        f"worse {shares['b_worse']:.1%} ({shares['pairs']} pairs)"
    )
    figure.savefig(path, dpi=120)
    return path


def _symmetric_log_bins(max_abs: int, per_side: int = 25) -> np.ndarray:
    """Bin edges: one bin around 0, then geometric bins out to +-``max_abs``."""
    outer = np.unique(np.geomspace(1.5, max(max_abs, 1) + 0.5, per_side))
    return np.concatenate([-outer[::-1], [-0.5, 0.5], outer])


def checkpoint_ranks(
    path: str, exclude_valid: bool = True, batch_size: int = 256
) -> tuple[torch.Tensor, np.ndarray]:
    """(ranks, pairs) of the checkpoint at ``path`` on its own test split: ranks as in
    :func:`held_out_ranks`, pairs an (n, 2) array of the (user, item) raw tokens they belong to."""
    from recbole_kd.quick_start import load_data_and_model

    _, model, dataset, train_data, valid_data, test_data = load_data_and_model(path)
    known = (train_data._dataset, valid_data._dataset) if exclude_valid else (train_data._dataset,)
    test = test_data._dataset
    ranks = held_out_ranks(model, test, known, batch_size)
    users, items = held_out_pairs(test)
    pairs = np.stack(
        [
            dataset.id2token(test.uid_field, users.numpy()),
            dataset.id2token(test.iid_field, items.numpy()),
        ],
        axis=1,
    )
    return ranks, pairs


def compare_checkpoints(
    path_a: str,
    path_b: str,
    exclude_valid: bool = True,
    png: str | None = None,
    labels: tuple[str, str] = ("A", "B"),
) -> dict[str, float | int]:
    """:func:`compare_ranks` of two checkpoints, which must share their test pairs."""
    ranks_a, pairs_a = checkpoint_ranks(path_a, exclude_valid)
    ranks_b, pairs_b = checkpoint_ranks(path_b, exclude_valid)
    if not np.array_equal(pairs_a, pairs_b):
        raise CheckpointError(
            "the checkpoints were not trained on the same split (their test pairs differ): "
            "use the same dataset, seed, eval_args and filtering for both"
        )
    if png:
        plot_rank_differences(ranks_a, ranks_b, png, labels)
    return compare_ranks(ranks_a, ranks_b)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_kd.tools.rank_comparison", description=__doc__.splitlines()[0]
    )
    parser.add_argument("checkpoint_a", help="model A, e.g. the teacher")
    parser.add_argument("checkpoint_b", help="model B, e.g. the student")
    parser.add_argument("--png", help="write a histogram of rank differences here")
    parser.add_argument(
        "--labels", nargs=2, default=["A", "B"], metavar=("A", "B"), help="names in the plot"
    )
    parser.add_argument(
        "--keep-valid",
        action="store_true",
        help="keep validation items among the candidates (default: excluded, as RecBole does)",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    with user_errors("rank_comparison", args.debug):
        shares = compare_checkpoints(
            args.checkpoint_a, args.checkpoint_b, not args.keep_valid, args.png, tuple(args.labels)
        )
    print(f"held-out pairs: {shares['pairs']}")
    print(f"B ranks better: {shares['b_better']:.4f}")
    print(f"equal:          {shares['equal']:.4f}")
    print(f"B ranks worse:  {shares['b_worse']:.4f}")


if __name__ == "__main__":
    main()
