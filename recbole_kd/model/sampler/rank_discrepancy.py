"""Rank discrepancy-aware sampling of Bidirectional Distillation (``docs/algorithms.md`` section 5).

W. Kweon, S. Kang, H. Yu. "Bidirectional Distillation for Top-K Recommender System". WWW 2021.

At every rank refresh both models score all items; from each user's two rankings come two sampling
weights over items: teacher -> student (items for the student's BD loss, those the teacher ranks
higher) and student -> teacher (items for the teacher's BD loss). For every training positive, each
direction then needs one draw per epoch until the next refresh: they are drawn up front, in user
chunks, and kept in flat per-direction pools, so no users x items matrix is ever held.
"""

from __future__ import annotations

import scipy.sparse as sp
import torch
from torch import Tensor

from recbole_kd.errors import KDConfigError
from recbole_kd.kernels.sort import sort_keys, stable_row_order
from recbole_kd.model.sampler.positives import (
    PositiveRows,
    ScoreFn,
    check_rows,
    chunk_generator,
    chunk_index,
    fill_cells,
    user_chunks,
)
from recbole_kd.timing import clock

CONVENTIONS = ("paper", "reference_code")
POSITIVES_MODES = ("exclude", "score_zero")


def ranks_from_scores(
    scores: Tensor, excluded: Tensor | None = None, convention: str = "paper"
) -> Tensor:
    """Rank position of every item in every row, from one sort per row.

    Args:
        scores: [C, I] scores of C users over I items, compared as float32; ties (in float32) go
            to the lower item id first.
        excluded: optional LongTensor of flat positions ``row * I + item`` (see
            :meth:`PositiveRows.cells`); those items are ranked after every other item and
            returned as rank 0 (no meaningful rank: their sampling weight is zeroed).
        convention: ``"paper"``: rank 1 = highest score; ``"reference_code"``: rank 1 = LOWEST
            score (the authors' notebook sorts ascending).

    Returns:
        int32 tensor [C, I] (half the memory of int64): ranks 1..n_eligible of each row's eligible
        items, 0 for excluded ones.
    """
    if convention not in CONVENTIONS:
        raise KDConfigError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    keys = sort_keys(scores, descending=convention == "paper")
    if excluded is not None:
        # Park excluded items behind all eligible ones so those hold ranks 1..n_eligible.
        keys.view(-1).index_fill_(0, excluded, torch.iinfo(torch.int32).max)
    # A stable sort breaks ties by item id, so ranks do not depend on the device's sort kernel.
    order = stable_row_order(keys)
    del keys
    positions = torch.arange(1, scores.shape[1] + 1, dtype=torch.int32, device=scores.device)
    positions = positions.expand_as(order)
    ranks = torch.empty_like(order, dtype=torch.int32).scatter_(1, order, positions)
    if excluded is not None:
        ranks.view(-1).index_fill_(0, excluded, 0)
    return ranks


def discrepancy_weights(
    rank_teacher: Tensor,
    rank_student: Tensor,
    eps_t: float,
    eps_s: float,
    excluded: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Unnormalised sampling weights of both BD directions, from ranks [C, I] of each model.

    - w_to_student(j) = tanh(max(eps_t * (rank_S(j) - rank_T(j)), 0)): items for the student's BD
      loss, those the teacher ranks above the student.
    - w_to_teacher(j) = exp(eps_s * (rank_T(j) - rank_S(j))): items for the teacher's BD loss,
      favouring softly those the student ranks above the teacher. Each row is divided by its
      largest weight (the row max is subtracted from the exponent) so exp never overflows; only
      proportions within a row matter.

    Items at the flat positions ``excluded`` (``row * I + item``) get weight 0 in both directions.

    Returns:
        (w_to_student, w_to_teacher): float32 [C, I] each, non-negative.
    """
    n_items = rank_teacher.shape[1]
    # rank_S - rank_T is an integer in [-I, I]: tanh and the exponent are evaluated once on that
    # range and looked up per item, 4x cheaper on CPU than evaluating tanh on every cell, with
    # the same float32 values.
    gap = torch.arange(-n_items, n_items + 1, dtype=torch.float32, device=rank_teacher.device)
    to_student_table = (eps_t * gap).clamp_(min=0.0).tanh_()
    exponent_table = gap.mul_(-eps_s)
    index = (rank_student - rank_teacher).add_(n_items).view(-1)
    w_to_student = to_student_table.index_select(0, index).view(rank_teacher.shape)
    exponent = exponent_table.index_select(0, index).view(rank_teacher.shape)
    del index
    if excluded is not None:
        w_to_student.view(-1).index_fill_(0, excluded, 0.0)
        exponent.view(-1).index_fill_(0, excluded, float("-inf"))
    row_max = exponent.amax(dim=1, keepdim=True)
    # A row with every item excluded has max -inf: shift by 0 instead so its weights stay 0.
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    return w_to_student, exponent.sub_(row_max).exp_()


def occurrence_index(users: Tensor) -> Tensor:
    """LongTensor [B]: how many earlier rows of ``users`` [B] hold the same id (a cumcount)."""
    order = torch.argsort(users, stable=True)
    grouped = users[order]
    position = torch.arange(len(users), device=users.device)
    is_first = torch.ones_like(grouped, dtype=torch.bool)
    is_first[1:] = grouped[1:] != grouped[:-1]
    # Index of the first row of each row's group: running max over the group starts.
    group_start = torch.cummax(torch.where(is_first, position, 0), dim=0).values
    occurrence = torch.empty_like(position)
    occurrence[order] = position - group_start
    return occurrence


class RankDiscrepancySampler:
    """BD's rank discrepancy-aware sampler: per-refresh draw pools and per-user read pointers.

    ``refresh()`` draws, for each user u and each direction, |I_u| x items_per_positive x epochs
    items with replacement from the direction's weights and stores them in flat pools:
    ``pool_student`` / ``pool_teacher`` (int32, or int64 beyond 2^31 items) hold user u's draws at
    ``offsets[r]:offsets[r + 1]``, r = u - ``users.start`` (``offsets`` LongTensor
    [len(users) + 1]). ``next_items(users)`` hands them out in order, advancing ``pointers``
    (LongTensor [len(users)], draws consumed since the refresh) and wrapping around if a user asks
    for more than was planned.

    The sampler holds the pools of the block ``users`` (every user by default; a rank's in a
    distributed run). Each chunk of ``chunk_size`` users draws from its own stream, seeded by
    (``seed``, refresh, chunk), so a user's draws do not depend on which block holds it.

    Eligible items are those that are neither item 0 nor, with ``positives_mode="exclude"``, a
    training positive of the user. With ``positives_mode="score_zero"`` (a quirk of the reference
    code) both models score the positives 0 and they are ranked and drawn like any other item.
    When a user's student-direction weights are all zero (the student ranks no eligible item below
    the teacher, e.g. the models agree), that user's student draws are uniform over eligible items.
    """

    def __init__(
        self,
        positives_csr: sp.spmatrix,
        n_items: int,
        eps_t: float = 1e-2,
        eps_s: float = 1e-4,
        convention: str = "paper",
        positives_mode: str = "exclude",
        items_per_positive: int = 1,
        seed: int = 0,
        device: torch.device | str = "cpu",
        chunk_size: int = 1024,
        users: range | None = None,
    ) -> None:
        if convention not in CONVENTIONS:
            raise KDConfigError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        if positives_mode not in POSITIVES_MODES:
            raise KDConfigError(
                f"positives_mode must be one of {POSITIVES_MODES}, got {positives_mode!r}"
            )
        if items_per_positive < 1:
            raise KDConfigError(f"items_per_positive must be >= 1, got {items_per_positive}")
        self.device = torch.device(device)
        self.positives = PositiveRows(positives_csr, self.device)
        if self.positives.shape[1] != n_items:
            raise KDConfigError(f"positives have {self.positives.shape[1]} columns, not {n_items}")
        self.n_items = n_items
        self.eps_t, self.eps_s = eps_t, eps_s
        self.convention = convention
        self.positives_mode = positives_mode
        self.items_per_positive = items_per_positive
        self.chunk_size = chunk_size
        self.seed = seed
        self.users = range(self.positives.shape[0]) if users is None else users
        n_users = len(self.users)
        self._pool_dtype = torch.int32 if n_items <= torch.iinfo(torch.int32).max else torch.int64
        self.offsets = torch.zeros(n_users + 1, dtype=torch.long, device=self.device)
        self.pool_student = torch.zeros(0, dtype=self._pool_dtype, device=self.device)
        self.pool_teacher = torch.zeros(0, dtype=self._pool_dtype, device=self.device)
        self.pointers = torch.zeros(n_users, dtype=torch.long, device=self.device)
        self.n_refreshes = 0
        self.last_refresh_seconds = 0.0  # wall time of the last refresh(), device work included

    @torch.no_grad()
    def refresh(
        self,
        teacher_score_fn: ScoreFn,
        student_score_fn: ScoreFn,
        epochs: int,
        show_progress: bool = False,
    ) -> None:
        """Rebuilds both pools from fresh scores, for ``epochs`` epochs of training pairs.

        Memory: O(chunk_size x n_items) temporaries (under 64 bytes per entry, score_fn outputs
        included) plus the two pools (2 x nnz x items_per_positive x epochs x 4 bytes). On error
        the previous pools are kept.
        """
        if epochs < 1:
            raise KDConfigError(f"epochs must be >= 1, got {epochs}")
        start = clock()
        first = self.users.start
        need = self.positives.counts[first:self.users.stop] * (self.items_per_positive * epochs)
        offsets_tensor = torch.cat([need.new_zeros(1), torch.cumsum(need, dim=0)])
        offsets = offsets_tensor.tolist()  # chunk boundaries as Python ints, one device sync
        pools = [
            torch.empty(offsets[-1], dtype=self._pool_dtype, device=self.device) for _ in range(2)
        ]
        progress = "BD rank refresh" if show_progress else None
        for users in user_chunks(self.users, self.chunk_size, self.device, progress):
            lo, hi = offsets[int(users[0]) - first], offsets[int(users[-1]) - first + 1]
            weights = self._weights(users, teacher_score_fn, student_score_fn)
            generator = chunk_generator(self.seed, "bd", self.n_refreshes,
                                        chunk_index(users, self.chunk_size), self.device)
            for pool, weight in zip(pools, weights):
                pool[lo:hi] = self._draw(weight, need[users - first], generator)
        self.offsets, (self.pool_student, self.pool_teacher) = offsets_tensor, pools
        self.pointers.zero_()
        self.n_refreshes += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.last_refresh_seconds = clock() - start

    def _weights(
        self, users: Tensor, teacher_score_fn: ScoreFn, student_score_fn: ScoreFn
    ) -> tuple[Tensor, Tensor]:
        """(w_to_student, w_to_teacher) float32 [C, n_items] of a chunk of users."""
        # Excluded items as flat positions in the chunk's [C, n_items] matrices: O(positives)
        # to fill, where dense masks cost passes over the whole chunk.
        padding = self.positives.padding_cells(users)
        positives = self.positives.cells(users, padding=False)
        excluded = torch.cat([padding, positives]) if self.positives_mode == "exclude" else padding
        ranks = []
        for score_fn in (teacher_score_fn, student_score_fn):
            scores = torch.as_tensor(score_fn(users), device=self.device)
            if self.positives_mode == "score_zero":
                scores = fill_cells(scores, positives, 0.0)
            ranks.append(ranks_from_scores(scores, excluded, self.convention))
            del scores  # free each model's scores before the next model's arrive
        w_to_student, w_to_teacher = discrepancy_weights(
            ranks[0], ranks[1], self.eps_t, self.eps_s, excluded
        )
        del ranks
        agree = w_to_student.amax(dim=1) <= 0  # weights are non-negative: all zero
        if bool(agree.any()):
            w_to_student[agree] = 1.0
            w_to_student.view(-1).index_fill_(0, excluded, 0.0)
        return w_to_student, w_to_teacher

    def _draw(self, weights: Tensor, need: Tensor, generator: torch.Generator) -> Tensor:
        """Flat draws: need[c] draws of row c from ``weights`` [C, I], row after row.

        One multinomial call per group of rows whose need has the same bit length: a call draws
        its group's largest need for every row, under twice what a row keeps. (One call for the
        whole chunk would draw the chunk's largest need for every row: with long-tailed activity,
        ~50x what is kept, and most of a refresh's time.) Rows with need 0 (e.g. padding user 0)
        draw nothing and may have no eligible item.
        """
        flat = torch.empty(int(need.sum()), dtype=self._pool_dtype, device=self.device)
        if bool(((weights.amax(dim=1) <= 0) & (need > 0)).any()):
            raise KDConfigError("a user with training positives has no eligible item to sample")
        row_start = torch.cumsum(need, dim=0) - need  # where each row's draws go in ``flat``
        bit_length = torch.frexp(need.to(torch.float64)).exponent  # 0 for need 0; exact < 2^53
        for length in torch.unique(bit_length).tolist():  # ascending: a fixed random stream
            if length == 0:
                continue
            rows = torch.nonzero(bit_length == length).squeeze(1)
            most = int(need[rows].max())
            draws = torch.multinomial(
                weights[rows], most, replacement=True, generator=generator
            )
            column = torch.arange(most, device=self.device)
            keep = column < need[rows, None]
            flat[(row_start[rows, None] + column)[keep]] = draws[keep].to(self._pool_dtype)
        return flat

    def next_items(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """Next unused draws for the rows of a training batch.

        Args:
            users: LongTensor [B] of the batch's users; repeats get consecutive draws in row order.

        Returns:
            (student-direction items, teacher-direction items), LongTensor [B] each.
        """
        users = users.to(self.device, torch.long)
        rows = users - self.users.start
        check_rows(rows, self.users, self.positives.shape[0])
        starts = self.offsets[rows]
        sizes = self.offsets[rows + 1] - starts
        if bool((sizes == 0).any()):
            raise KDConfigError(
                "next_items() got a user without BD draws: call refresh() first; users without "
                "training positives have none"
            )
        slots = starts + (self.pointers[rows] + occurrence_index(rows)) % sizes
        self.pointers.index_add_(0, rows, torch.ones_like(rows))
        return self.pool_student[slots].long(), self.pool_teacher[slots].long()

    def state_dict(self) -> dict:
        """Pools, offsets, pointers and the refresh count: enough to continue a run identically."""
        return {
            "offsets": self.offsets,
            "pool_student": self.pool_student,
            "pool_teacher": self.pool_teacher,
            "pointers": self.pointers.clone(),  # next_items() advances them in place
            "n_refreshes": self.n_refreshes,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restores what :meth:`state_dict` returned (by a sampler of the same block of users)."""
        if len(state["pointers"]) != len(self.users):
            raise KDConfigError(
                f"BD sampler state of {len(state['pointers'])} users, but this sampler holds the "
                f"{len(self.users)} users of {self.users}")
        for key in ("offsets", "pool_student", "pool_teacher", "pointers"):
            setattr(self, key, state[key].to(self.device).clone())
        self.n_refreshes = int(state["n_refreshes"])
