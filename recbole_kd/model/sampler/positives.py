"""Training positives as flat tensors, and the helpers every sampler shares.

Conventions (RecBole): user 0 and item 0 are padding. Training positives come as
``dataset.inter_matrix(form="csr")`` of shape [n_users, n_items]; its stored entries (whatever
their values) are the positives. Work runs in chunks of users on the samplers' device, so
temporaries stay O(chunk_size x n_items). A sampler may hold state for a block of users only
(a rank's, see :mod:`recbole_kd.sharding`): such blocks are whole chunks, and each chunk draws
from a generator of its own (:func:`chunk_generator`), so draws do not depend on the blocks.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable

import numpy as np
import scipy.sparse as sp
import torch
from recbole.utils import set_color
from torch import Tensor
from tqdm import tqdm

from recbole_kd.errors import KDConfigError

ScoreFn = Callable[[Tensor], Tensor]
"""All-item scores of a chunk of users: LongTensor [C] -> FloatTensor [C, n_items]."""


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A seeded ``torch.Generator`` on ``device`` (CUDA draws need a CUDA generator)."""
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(seed)
    return generator


def chunk_generator(
    seed: int, purpose: str, step: int, chunk: int, device: torch.device | str
) -> torch.Generator:
    """The random stream of one chunk of users for one ``purpose`` (e.g. "rrd") at one ``step``
    (epoch or refresh): independent of the other chunks, whichever process draws it."""
    words = [seed % 2**32, zlib.crc32(purpose.encode()), step, chunk]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint64)
    return make_generator(int(state[0] >> np.uint64(1)), device)


def user_chunks(
    users: int | range, chunk_size: int, device: torch.device, progress: str | None = None
) -> Iterable[Tensor]:
    """User ids ``range(users)`` (or the ``range``) split into LongTensors of at most
    ``chunk_size`` consecutive ids; with ``progress`` (a label), shown as a tqdm bar."""
    if chunk_size < 1:
        raise KDConfigError(f"kd_chunk_size must be >= 1, got {chunk_size}")
    users = range(users) if isinstance(users, int) else users
    chunks = torch.arange(users.start, users.stop, device=device).split(chunk_size)
    if progress:
        return tqdm(chunks, desc=set_color(progress, "pink"), ncols=100)
    return chunks


def chunk_index(users: Tensor, chunk_size: int) -> int:
    """Which chunk of ``chunk_size`` ids the chunk ``users`` (from :func:`user_chunks` over a
    block of whole chunks) is: the key of its random stream."""
    return int(users[0]) // chunk_size


def check_rows(rows: Tensor, users: range, n_users: int) -> None:
    """Refuse ``rows`` (user ids minus ``users.start``) of users outside the block ``users``
    that a sampler holds (in a distributed run, another rank's users). A block of all
    ``n_users`` users is not checked: a batch's users are always in it, and the check would
    cost a device sync per batch."""
    if len(users) == n_users or not len(rows):
        return
    if not (0 <= int(rows.min()) and int(rows.max()) < len(users)):
        raise RuntimeError(f"asked for users outside {users}, the block this sampler holds")


def csr_entries(indptr: Tensor, users: Tensor) -> tuple[Tensor, Tensor]:
    """(rows, entries): for every stored entry of the CSR rows ``users``, its row in ``users``
    (0..len(users)-1) and its index into the CSR's column array, row after row."""
    starts = indptr[users]
    counts = indptr[users + 1] - starts
    rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
    # Offset of each stored entry inside its own row: global index minus its row's first index.
    row_first = torch.cumsum(counts, dim=0) - counts
    within = torch.arange(len(rows), device=users.device) - row_first[rows]
    return rows, starts[rows] + within


class PositiveRows:
    """Training positives of a CSR matrix [n_users, n_items], held as torch tensors on a device.

    Attributes:
        shape: (n_users, n_items) of the matrix.
        indptr: LongTensor [n_users + 1], CSR row pointers.
        indices: LongTensor [nnz], item ids of the positives, row after row.
        counts: LongTensor [n_users], number of training positives |I_u| of each user.
    """

    def __init__(self, matrix: sp.spmatrix, device: torch.device | str) -> None:
        csr = sp.csr_matrix(matrix, copy=True)
        csr.sum_duplicates()  # a repeated (u, i) entry is still one positive
        csr.sort_indices()  # each row's items in increasing order
        self.shape: tuple[int, int] = (int(csr.shape[0]), int(csr.shape[1]))
        self.indptr = torch.from_numpy(csr.indptr.astype(np.int64)).to(device)
        self.indices = torch.from_numpy(csr.indices.astype(np.int64)).to(device)
        self.counts = self.indptr[1:] - self.indptr[:-1]
        self._free_below: Tensor | None = None

    @property
    def free_below(self) -> Tensor:
        """LongTensor [nnz], sorted: for the k-th (0-based) positive p_k of user u,
        u * n_items + p_k - 1 - k, where p_k - 1 - k items of 1..p_k - 1 are not u's positives.
        Computed once."""
        if self._free_below is None:
            rows = torch.repeat_interleave(
                torch.arange(self.shape[0], device=self.indptr.device), self.counts)
            within = torch.arange(len(rows), device=rows.device) - self.indptr[rows]
            self._free_below = rows * self.shape[1] + self.indices - 1 - within
        return self._free_below

    def cells(self, users: Tensor, padding: bool = True) -> Tensor:
        """LongTensor: flat positions ``row * n_items + item`` of the training positives of
        ``users`` in a [len(users), n_items] matrix; with ``padding`` item 0 of every row too.

        Filling a matrix at these positions costs O(positives), not O(len(users) x n_items) as
        a dense mask does.
        """
        rows, entries = csr_entries(self.indptr, users)
        cells = rows * self.shape[1] + self.indices[entries]
        if padding:
            cells = torch.cat([self.padding_cells(users), cells])
        return cells

    def padding_cells(self, users: Tensor) -> Tensor:
        """LongTensor: flat positions of item 0 (padding) in each row of a [len(users), n_items]
        matrix."""
        return torch.arange(len(users), device=users.device) * self.shape[1]

    def mask(self, users: Tensor, padding: bool = True) -> Tensor:
        """BoolTensor [len(users), n_items]: True at each user's training positives.

        With ``padding`` item 0 is marked too, since it is excluded everywhere.
        """
        mask = torch.zeros((len(users), self.shape[1]), dtype=torch.bool, device=users.device)
        # Filling the flattened view is ~100x faster on CPU than a 2-D index_put.
        return mask.view(-1).index_fill_(0, self.cells(users, padding), True).view_as(mask)


def fill_cells(matrix: Tensor, cells: Tensor, value: float) -> Tensor:
    """A copy of ``matrix`` [C, I] with ``value`` at flat positions ``cells`` (row * I + column)."""
    return matrix.reshape(-1).index_fill(0, cells, value).view_as(matrix)
