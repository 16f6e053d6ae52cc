"""DE-RRD's evaluation protocol as an option of any run: the held-out item against fixed negatives.

With ``kd_eval_protocol: fixed_sampled`` (Kang et al., CIKM 2020, section 4.1), every user's
validation and test item are each ranked among the same ``kd_eval_negatives`` items (499 in the
paper), drawn once per run from the items the user never interacted with, in any part of the split.
RecBole's ``uni499`` mode differs: it redraws negatives at every evaluation and separately for
validation and test (RecBole issue #2077).

How: RecBole's full-sort evaluation scores users x all items in batches as usual; a trainer mixin
then sets every score outside the user's candidate set ({held-out item} ∪ negatives) to -inf before
RecBole's top-k. RecBole's metrics over all items are then exactly the metrics over the candidates,
at the cost of a full-sort evaluation plus one mask per batch. The other held-out item (the test
item during validation) is never a candidate, as in the paper.

Leave-one-out with fewer than 3 interactions: RecBole would give a user with 2 interactions no
validation item; recbole_kd's runner refuses such data (``recbole_kd.data.check_leave_one_out``)
and ``properties/protocols/derrd.yaml`` filters such users out (``user_inter_num_interval:
"[3,inf)"``), so that every user has train, validation and test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from recbole.utils import ModelType

from recbole_kd import sharding
from recbole_kd.errors import KDConfigError
from recbole_kd.model.sampler.positives import check_rows, chunk_generator

FULL = "full"
FIXED_SAMPLED = "fixed_sampled"
PROTOCOLS = (FULL, FIXED_SAMPLED)

LEAVE_ONE_OUT_FIX = (
    "eval_args: {split: {LS: valid_and_test}, order: RO, group_by: user, mode: full} "
    "(e.g. --config_files=properties/protocols/derrd.yaml)"
)

def check_eval_protocol(config_dict: dict[str, Any]) -> None:
    """Reject a fixed-sampled protocol over anything but leave-one-out full-sort evaluation.

    ``config_dict`` is RecBole's final config, after it has completed ``eval_args``.
    """
    if config_dict.get("kd_eval_protocol", FULL) == FULL:
        return
    if config_dict.get("MODEL_TYPE") == ModelType.SEQUENTIAL:
        raise KDConfigError(
            f"kd_eval_protocol: {config_dict['kd_eval_protocol']} draws each user's fixed "
            "negatives once for a general model's users; a sequential run evaluates rows of "
            "item sequences with RecBole's own evaluation. Set kd_eval_protocol: full.")
    eval_args = config_dict["eval_args"]
    problems = []
    # A fixed split (RecBole's benchmark files) ignores split and group_by: its files decide.
    fixed_split = bool(config_dict.get("benchmark_filename"))
    if not fixed_split and eval_args.get("split") != {"LS": "valid_and_test"}:
        problems.append(f"eval_args.split is {eval_args.get('split')}, not {{LS: valid_and_test}}")
    if not fixed_split and eval_args.get("group_by") != "user":
        problems.append(f"eval_args.group_by is {eval_args.get('group_by')}, not user")
    modes = eval_args.get("mode", {})
    if any(mode != "full" for mode in modes.values()):
        problems.append(f"eval_args.mode is {modes}, not full (the candidates replace sampling)")
    if problems:
        raise KDConfigError(
            f"kd_eval_protocol: {config_dict['kd_eval_protocol']} ranks one held-out item per "
            f"user and part, so it needs leave-one-out full-sort evaluation: {'; '.join(problems)}. "
            f"Set {LEAVE_ONE_OUT_FIX}, or kd_eval_protocol: full."
        )


class CandidateSets:
    """Each user's fixed negatives, drawn once per run and shared by validation and test.

    ``negatives[u - users.start]`` holds ``kd_eval_negatives`` distinct item ids that user
    ``u`` of the block ``users`` (every user, or a rank's) never interacted with (in train,
    validation or test), never the padding item 0; the padding user 0 is drawn like the others
    and never used. A user's candidates in a part are those negatives plus the user's held-out
    item of that part.
    """

    def __init__(self, negatives: torch.Tensor, n_items: int, users: range | None = None,
                 n_users: int | None = None):
        self.negatives = negatives  # [len(users), n_negatives], int32 to halve its memory
        self.n_items = n_items
        self.users = range(len(negatives)) if users is None else users
        self.n_users = len(self.users) if n_users is None else n_users  # of the data set

    @classmethod
    def draw(
        cls,
        users: torch.Tensor,
        items: torch.Tensor,
        n_users: int,
        n_items: int,
        n_negatives: int,
        seed: int,
        chunk_size: int = 256,
        block: range | None = None,
    ) -> CandidateSets:
        """Draw uniformly, without replacement, ``n_negatives`` never-interacted items for each
        user of ``block`` (default: every user; else whole chunks of ``chunk_size`` users).

        ``users``/``items``: every interaction of the data set (all parts). Each item gets a
        uniform random key, interacted items and item 0 get 2 (above any key), and the
        ``n_negatives`` smallest keys win: a uniformly random subset of the allowed items. Each
        chunk of ``chunk_size`` users draws its keys (chunk x n_items floats at once) from a
        generator of its own, seeded from ``seed`` and the chunk: a user's candidates do not
        depend on the block, and the global random state is left untouched.
        """
        if n_negatives > n_items - 1:
            raise KDConfigError(
                f"kd_eval_negatives = {n_negatives} exceeds the {n_items - 1} items of the data set."
            )
        block = range(n_users) if block is None else block
        order = torch.argsort(users, stable=True)
        users, items = users[order], items[order]
        starts = torch.searchsorted(users, torch.arange(n_users + 1))
        chunks = [torch.zeros((0, n_negatives), dtype=torch.int32)]
        for first in range(block.start, block.stop, chunk_size):
            last = min(first + chunk_size, block.stop)
            generator = chunk_generator(seed, "candidates", 0, first // chunk_size, "cpu")
            span = slice(int(starts[first]), int(starts[last]))
            keys = torch.rand(last - first, n_items, generator=generator)
            keys[users[span] - first, items[span]] = 2.0
            keys[:, 0] = 2.0
            picked_keys, picked = keys.topk(n_negatives, dim=1, largest=False)
            if (picked_keys >= 2.0).any():
                _raise_too_few(keys, first, n_negatives)
            chunks.append(picked.to(torch.int32))
        return cls(torch.cat(chunks), n_items, block, n_users)

    @classmethod
    def from_parts(cls, config, parts: Sequence) -> CandidateSets:
        """The candidate sets of a run from its train, validation and test datasets, for the
        users this process evaluates (its rank's)."""
        first = parts[0]
        users = torch.cat([part.inter_feat[first.uid_field] for part in parts])
        items = torch.cat([part.inter_feat[first.iid_field] for part in parts])
        return cls.draw(
            users, items, first.user_num, first.item_num, config["kd_eval_negatives"],
            config["seed"], config["kd_chunk_size"],
            sharding.owned_users(first, config["kd_chunk_size"]),
        )

    def to(self, device: torch.device | str) -> CandidateSets:
        return CandidateSets(self.negatives.to(device), self.n_items, self.users, self.n_users)

    def restrict(
        self,
        scores: torch.Tensor,
        users: torch.Tensor,
        positive_u: torch.Tensor,
        positive_i: torch.Tensor,
    ) -> torch.Tensor:
        """``scores`` [B, n_items] of the batch's ``users``, -inf everywhere but at their candidates.

        Candidates of row r: its user's negatives, and the held-out items ``positive_i`` of the
        rows ``positive_u == r`` (the evaluated part's target). Copies B x (n_negatives + 1) values
        into a fresh -inf tensor instead of masking all items: cheaper than a [B, n_items] mask.
        """
        index = users.to(self.negatives.device) - self.users.start
        check_rows(index, self.users, self.n_users)
        rows = self.negatives.index_select(0, index).long()
        rows = rows.to(scores.device)
        restricted = torch.full_like(scores, -np.inf)
        restricted.scatter_(1, rows, scores.gather(1, rows))
        positive_u, positive_i = positive_u.to(scores.device), positive_i.to(scores.device)
        restricted[positive_u, positive_i] = scores[positive_u, positive_i]
        return restricted


def _raise_too_few(keys: torch.Tensor, first: int, n_negatives: int) -> None:
    available = (keys < 2.0).sum(dim=1)
    row = int(torch.argmin(available))
    raise KDConfigError(
        f"kd_eval_negatives = {n_negatives}, but user {first + row} (internal id) has only "
        f"{int(available[row])} items it never interacted with. Lower kd_eval_negatives, or drop "
        "such users (e.g. user_inter_num_interval)."
    )


class FixedSampledEvaluation:
    """Trainer mixin: full-sort scores restricted to each user's candidates before RecBole's top-k.

    Needs ``candidates`` (see ``attach_candidates``). Everything else about evaluation, history
    masking included, is RecBole's: training items are never candidates anyway.
    """

    candidates: CandidateSets | None = None

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        if self.candidates is None:
            raise RuntimeError(
                "kd_eval_protocol: fixed_sampled needs the run's candidate sets: call "
                "recbole_kd.eval_protocol.attach_candidates(trainer, config, loaders) first."
            )
        # The evaluated part's held-out item is the target; the other part's stays out.
        users = interaction[self.config["USER_ID_FIELD"]]
        scores = self.candidates.restrict(scores, users, positive_u, positive_i)
        return interaction, scores, positive_u, positive_i


def uses_candidates(config) -> bool:
    """True when the run evaluates under ``kd_eval_protocol: fixed_sampled``."""
    return (config["kd_eval_protocol"] or FULL) == FIXED_SAMPLED


def attach_candidates(trainer, config, loaders: Sequence) -> None:
    """Give a fixed-sampled ``trainer`` its run's candidate sets, drawn from the datasets of the
    train, validation and test ``loaders``; a trainer of the full protocol is left as it is."""
    if isinstance(trainer, FixedSampledEvaluation):
        parts = [loader._dataset for loader in loaders]
        trainer.candidates = CandidateSets.from_parts(config, parts).to(config["device"])
