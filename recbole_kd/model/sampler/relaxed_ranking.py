"""RRD's samplers (Kang et al., CIKM 2020; ``docs/algorithms.md`` section 3).

- :func:`teacher_top_n`: the teacher's top-N list of every user, computed once before training.
- :class:`RelaxedRankingSampler`: the per-epoch "interesting" and "uninteresting" items.
"""

from __future__ import annotations

import math

import scipy.sparse as sp
import torch
from torch import Tensor

from recbole_kd.errors import KDConfigError
from recbole_kd.model.sampler.positives import (
    PositiveRows,
    ScoreFn,
    check_rows,
    chunk_generator,
    chunk_index,
    fill_cells,
    user_chunks,
)


@torch.no_grad()
def teacher_top_n(
    score_fn: ScoreFn,
    positives_csr: sp.spmatrix,
    n: int,
    chunk_size: int,
    device: torch.device | str,
    show_progress: bool = False,
    users: range | None = None,
) -> Tensor:
    """Each user's top-n items by teacher score, training positives and item 0 excluded.

    Args:
        score_fn: teacher's all-item scores of a chunk of users, [C] -> [C, n_items].
        positives_csr: training positives, [n_users, n_items].
        n: list length N (``rrd_top_n``).
        chunk_size: users scored at once; memory is O(chunk_size x n_items).
        device: where scores are masked and ranked and where the result lives.
        users: the block of users to list (a rank's); default every user.

    Returns:
        LongTensor [len(users), n]: item ids, column 0 the teacher's best item (descending score).
    """
    device = torch.device(device)
    positives = PositiveRows(positives_csr, device)
    n_users, n_items = positives.shape
    users = range(n_users) if users is None else users
    max_positives = int(positives.counts.max()) if n_users else 0
    available = n_items - 1 - max_positives
    if not 1 <= n <= available:
        raise KDConfigError(
            f"rrd_top_n={n} must be between 1 and {available}, the number of items every user can "
            f"be recommended (n_items - 1 - max training positives per user = {n_items} - 1 - "
            f"{max_positives})"
        )
    top = torch.empty((len(users), n), dtype=torch.long, device=device)
    progress = "Teacher top-N" if show_progress else None
    for chunk in user_chunks(users, chunk_size, device, progress):
        scores = torch.as_tensor(score_fn(chunk), device=device)
        scores = fill_cells(scores, positives.cells(chunk), float("-inf"))
        top[chunk - users.start] = scores.topk(n, dim=1).indices
    return top


class RelaxedRankingSampler:
    """RRD's per-epoch sampling of interesting and uninteresting items (``docs/algorithms.md`` §3).

    ``sample()`` redraws, once per epoch, for every user of its block:

    - ``interesting`` [n_users, K]: K items of the user's teacher top-N list. With ``subsample``,
      K positions r in 1..N are drawn without replacement with probability proportional to
      exp(-r / T) (Gumbel-top-k, i.e. a Plackett-Luce draw); without it, the first K positions.
      Either way the items keep the teacher's order (column 0 is the teacher's favourite).
    - ``uninteresting`` [n_users, L]: L items drawn uniformly without replacement among items that
      are neither training positives, nor in the top-N list, nor item 0; in random order.

    Each chunk of ``chunk_size`` users draws from its own stream, seeded by (``seed``, epoch,
    chunk): the draws of a user do not depend on which block (rank) holds it. The model then
    reads rows with ``for_users(users)``.
    """

    # Exponent c of the chance e^-c (14: below 1e-6) that the rejection draw leaves a row short of
    # L survivors, which then takes the dense draw; a class attribute so tests can force that.
    _shortfall_exponent = 14

    def __init__(
        self,
        top_n: Tensor,
        positives_csr: sp.spmatrix,
        n_items: int,
        n_interesting: int,
        n_uninteresting: int,
        temperature: float = 10.0,
        subsample: bool = True,
        seed: int = 0,
        device: torch.device | str | None = None,
        chunk_size: int = 1024,
        users: range | None = None,
    ) -> None:
        """Args mirror the config: ``n_interesting`` K (``rrd_interesting``), ``n_uninteresting`` L
        (``rrd_uninteresting``), ``temperature`` T (``rrd_temperature``); ``top_n`` [len(users), N]
        comes from :func:`teacher_top_n` for the block ``users`` (default: every user of
        ``positives_csr``); ``device`` defaults to ``top_n``'s device."""
        self.device = torch.device(device) if device is not None else top_n.device
        self.top_n = top_n.to(self.device, torch.long)
        self.positives = PositiveRows(positives_csr, self.device)
        self.users = range(self.positives.shape[0]) if users is None else users
        if self.positives.shape[1] != n_items or not (
            len(self.users) == self.top_n.shape[0] and self.users.stop <= self.positives.shape[0]
        ):
            raise KDConfigError(
                f"positives have shape {self.positives.shape} and top_n {tuple(self.top_n.shape)}:"
                f" expected n_items={n_items} columns and a top_n row per user of {self.users}"
            )
        self.n_items = n_items
        self.n_interesting = n_interesting
        self.n_uninteresting = n_uninteresting
        self.temperature = temperature
        self.subsample = subsample
        self.seed = seed
        self.chunk_size = chunk_size
        # Fewest eligible uninteresting candidates of any user: sets the rejection draw's size.
        self._fewest_eligible = self._validate()
        # Log-weights -r/T of list positions r = 1..N; float64 keeps the Gumbel keys tie-free.
        n = self.top_n.shape[1]
        ranks = torch.arange(1, n + 1, dtype=torch.float64, device=self.device)
        self._log_weights = -ranks / temperature
        self.interesting: Tensor | None = None
        self.uninteresting: Tensor | None = None
        self.n_samples = 0  # completed sample() calls, i.e. epochs drawn

    def _validate(self) -> int:
        """Raises KDConfigError unless K, L, T and the top-N lists allow exact sampling; returns
        the fewest items any user (of every block) can draw as uninteresting."""
        n = self.top_n.shape[1]
        if not 1 <= self.n_interesting <= n:
            raise KDConfigError(
                f"rrd_interesting={self.n_interesting} must be between 1 and rrd_top_n={n}"
            )
        if self.subsample and not self.temperature > 0:
            raise KDConfigError(f"rrd_temperature={self.temperature} must be > 0")
        if self.top_n.numel() and not (
            (self.top_n >= 1).all() and (self.top_n < self.n_items).all()
        ):
            raise KDConfigError("top_n holds item ids outside 1..n_items-1 (item 0 is padding)")
        for users in user_chunks(self.users, self.chunk_size, self.device):
            if self.positives.mask(users).gather(1, self._rows(users)).any():
                raise KDConfigError("top_n lists a training positive of its user")
        # A user's top-N list holds N items outside its positives and item 0: the rest is
        # eligible. Taken over all users, so that every block draws alike.
        most_positives = int(self.positives.counts.max()) if len(self.positives.counts) else 0
        fewest = self.n_items - 1 - n - most_positives
        if not 0 <= self.n_uninteresting <= fewest:
            raise KDConfigError(
                f"rrd_uninteresting={self.n_uninteresting} must be between 0 and {fewest}, the "
                "smallest number of items of a user that are neither training positives, nor in "
                "the top-N list, nor item 0"
            )
        return fewest

    def _rows(self, users: Tensor) -> Tensor:
        """Top-N lists of ``users`` (ids of this sampler's block)."""
        return self.top_n[users - self.users.start]

    def _excluded(self, users: Tensor) -> Tensor:
        """BoolTensor [C, n_items]: items a user's uninteresting draw must skip."""
        return self.positives.mask(users).scatter_(1, self._rows(users), True)

    @torch.no_grad()
    def sample(self) -> tuple[Tensor, Tensor]:
        """Redraws the items of every user of the block, into new tensors (so rows a caller kept
        from the previous epoch do not change under it), and stores them.

        Returns:
            (interesting LongTensor [len(users), K], uninteresting LongTensor [len(users), L]).
        """
        interesting = self.top_n.new_zeros((len(self.users), self.n_interesting))
        uninteresting = self.top_n.new_zeros((len(self.users), self.n_uninteresting))
        for users in user_chunks(self.users, self.chunk_size, self.device):
            generator = chunk_generator(self.seed, "rrd", self.n_samples,
                                        chunk_index(users, self.chunk_size), self.device)
            rows = users - self.users.start
            interesting[rows] = self._draw_interesting(users, generator)
            uninteresting[rows] = self._draw_uninteresting(users, generator)
        self.interesting, self.uninteresting = interesting, uninteresting
        self.n_samples += 1
        return interesting, uninteresting

    def _draw_interesting(self, users: Tensor, generator: torch.Generator) -> Tensor:
        """LongTensor [C, K]: interesting items of a chunk of users, in the teacher's order."""
        top = self._rows(users)
        if not self.subsample:
            return top[:, : self.n_interesting]
        uniform = torch.rand(top.shape, dtype=torch.float64, device=self.device, generator=generator)
        # Gumbel-top-k: the K largest of log w_r + Gumbel noise are a Plackett-Luce draw without
        # replacement with weights w_r = exp(-r / T).
        gumbel = -torch.log(-torch.log(uniform.clamp_(min=torch.finfo(torch.float64).tiny)))
        chosen = (self._log_weights + gumbel).topk(self.n_interesting, dim=1).indices
        return top.gather(1, chosen.sort(dim=1).values)

    def _draw_uninteresting(self, users: Tensor, generator: torch.Generator) -> Tensor:
        """LongTensor [C, L]: uniform draw without replacement among each user's eligible items,
        in uniformly random order.

        Candidates are drawn uniformly from items 1..n_items-1; one that is excluded or repeats
        an earlier candidate of its row is rejected, and the first L survivors are kept: a
        sequential rejection draw, O(C x L) work where sorting keys of every item is
        O(C x n_items). Rows left with fewer than L survivors, and chunks where few items are
        eligible, take :meth:`_draw_uninteresting_dense` instead.
        """
        excluded = self._excluded(users)
        n_draws = self.n_uninteresting
        # Chance that a candidate survives while a row still lacks survivors, at least. Below
        # 1/4 (most items excluded, small catalogues) rows need many candidates: draw densely.
        survive = (self._fewest_eligible - (n_draws - 1)) / (self.n_items - 1)
        if n_draws == 0 or survive < 0.25:
            return self._draw_uninteresting_dense(excluded, generator)
        # Survivors dominate Binomial(M, survive): by Chernoff, M with M x survive = L + t,
        # t^2 / (2 (L + t)) = c, leaves a row short with probability below e^-c.
        c = self._shortfall_exponent
        n_candidates = math.ceil((n_draws + c + math.sqrt(c * c + 2 * c * n_draws)) / survive)
        candidates = torch.randint(
            1,
            self.n_items,
            (len(users), n_candidates),
            device=self.device,
            generator=generator,
        )
        usable = ~excluded.gather(1, candidates)
        # A stable sort puts a row's equal candidates side by side in draw order: all but the
        # first of each run are repeats.
        values, order = candidates.sort(dim=1, stable=True)
        repeat = torch.zeros_like(usable).scatter_(1, order[:, 1:], values[:, 1:] == values[:, :-1])
        usable &= ~repeat
        survivors = usable.cumsum(dim=1)
        full = survivors[:, -1] >= n_draws
        keep = usable & (survivors <= n_draws) & full[:, None]
        drawn = torch.empty((len(users), n_draws), dtype=torch.long, device=self.device)
        drawn[full] = candidates[keep].view(-1, n_draws)  # row-major: each row's L, in order
        if not bool(full.all()):
            drawn[~full] = self._draw_uninteresting_dense(excluded[~full], generator)
        return drawn

    def _draw_uninteresting_dense(self, excluded: Tensor, generator: torch.Generator) -> Tensor:
        """LongTensor [C, L]: the L largest of i.i.d. uniform keys over all items, ``excluded``
        ([C, n_items] bool) ones set to -1 so they never win, form a uniform random subset in
        random order. Keys are float64 so ties (which topk would break by item id) are
        negligible; memory is C x n_items x 9 bytes.
        """
        keys = torch.rand(excluded.shape, dtype=torch.float64, device=self.device,
                          generator=generator)
        keys.masked_fill_(excluded, -1.0)
        return keys.topk(self.n_uninteresting, dim=1).indices

    def for_users(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """(interesting [B, K], uninteresting [B, L]) rows of ``users`` from the last ``sample()``."""
        if self.interesting is None or self.uninteresting is None:
            raise RuntimeError("RelaxedRankingSampler.sample() must run before for_users()")
        rows = users.to(self.device, torch.long) - self.users.start
        check_rows(rows, self.users, self.positives.shape[0])
        return self.interesting[rows], self.uninteresting[rows]

    def state_dict(self) -> dict:
        """The epochs drawn: the next ``sample()`` of a sampler given this state draws what this
        one would."""
        return {"n_samples": self.n_samples}

    def load_state_dict(self, state: dict) -> None:
        """Restores what :meth:`state_dict` returned."""
        self.n_samples = int(state["n_samples"])
        self.interesting = self.uninteresting = None
