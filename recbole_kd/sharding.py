"""A distributed run's users, sharded: each rank trains on, evaluates and keeps state for its own.

Users are cut into one contiguous block per rank, made of whole chunks of ``kd_chunk_size``
consecutive user ids and balanced by training interactions. A rank's loaders hold its users'
rows, and its samplers keep state (top-N lists, draw pools, candidates) for its users only; the
random draws of a chunk come from a stream of its own (see
:func:`recbole_kd.model.sampler.positives.chunk_generator`), so they do not depend on how many
ranks share the users. In training every rank takes the same number of steps (a shorter shard
repeats its own interactions, as PyTorch's DistributedSampler pads), each of
``train_batch_size / world_size`` interactions, so that DDP's average of the ranks' gradients is
the gradient of the whole batch. Evaluation
blocks hold every user once, none repeated. A sharded loader is still an instance of its RecBole
class, which RecBole's trainer checks to choose how to train and evaluate.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch

from recbole_kd import distributed
from recbole_kd.errors import KDConfigError


def balanced_blocks(weights: np.ndarray, parts: int) -> list[np.ndarray]:
    """Positions 0..len(weights)-1 cut into ``parts`` contiguous blocks of about equal total
    weight, none empty while there are at least ``parts`` positions."""
    before = np.concatenate([[0], np.cumsum(weights)[:-1]])
    cuts = np.searchsorted(before, np.arange(1, parts) * weights.sum() / parts, side="left")
    # Cut i moved to at least i + 1 and at most len - parts + i + 1, so that no block is empty.
    shift = np.arange(1, parts)
    if len(weights) >= parts:
        cuts = np.clip(np.maximum.accumulate(cuts - shift), 0, len(weights) - parts) + shift
    return np.split(np.arange(len(weights)), cuts)


def chunk_blocks(interactions: np.ndarray, chunk_size: int, parts: int) -> list[range]:
    """User ids 0..len(interactions)-1 cut into ``parts`` contiguous blocks of whole chunks of
    ``chunk_size`` ids, balanced by ``interactions`` (per user)."""
    n_users = len(interactions)
    starts = np.arange(0, n_users, chunk_size)
    if len(starts) < parts:
        raise KDConfigError(
            f"{parts} processes need at least {parts} chunks of users, but the {n_users} users "
            f"make {len(starts)} chunk(s) of kd_chunk_size={chunk_size}: lower kd_chunk_size (to "
            f"at most {max(1, n_users // parts)}) or run fewer processes.")
    per_chunk = np.add.reduceat(interactions, starts)
    return [range(int(starts[block[0]]), min(n_users, int(starts[block[-1]]) + chunk_size))
            for block in balanced_blocks(per_chunk, parts)]


def interactions_per_user(dataset) -> np.ndarray:
    """Training interactions of each user id of ``dataset`` (a RecBole dataset)."""
    users = np.asarray(dataset.inter_feat[dataset.uid_field], dtype=np.int64)
    return np.bincount(users, minlength=dataset.user_num)


def user_blocks(dataset, chunk_size: int) -> list[range]:
    """Every rank's users of ``dataset`` (the training part), in whole chunks of ``chunk_size``
    (``kd_chunk_size``), by rank."""
    return chunk_blocks(interactions_per_user(dataset), chunk_size, distributed.world_size())


def owned_users(dataset, chunk_size: int) -> range:
    """This rank's users of ``dataset`` (the training part): all of them in one process."""
    if distributed.world_size() == 1:
        return range(dataset.user_num)
    return user_blocks(dataset, chunk_size)[distributed.rank()]


class TrainShard:
    """Loader mixin: a training loader's batches for this rank's block of users."""

    positions: np.ndarray  # this rank's rows of the loader (interactions, or users)
    epoch_length: int  # rows per epoch on every rank: the largest shard's
    epoch: int = 0

    @property
    def sampler(self):
        return self  # what RecBole's trainer calls set_epoch on

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_positions(self) -> np.ndarray:
        """This epoch's rows: shuffled by (seed, epoch), repeated up to ``epoch_length``."""
        positions = self.positions
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.config["seed"] + self.epoch)
            positions = positions[torch.randperm(len(positions), generator=generator).numpy()]
        return np.resize(positions, self.epoch_length)

    def __iter__(self):
        rows = self.epoch_positions()
        for start in range(0, len(rows), self.step):
            yield self.collate_fn(rows[start:start + self.step].tolist())

    def __len__(self) -> int:
        return math.ceil(self.epoch_length / self.step)


class EvaluationShard:
    """Loader mixin: an evaluation loader's batches for this rank's block of users."""

    positions: np.ndarray  # this rank's users, as positions in the loader's user list

    def __iter__(self):
        for start in range(0, len(self.positions), self.step):
            yield self.collate_fn(self.positions[start:start + self.step].tolist())

    def __len__(self) -> int:
        return math.ceil(len(self.positions) / self.step)


@cache
def _sharded_class(mixin: type, loader_class: type) -> type:
    return type(f"{mixin.__name__}{loader_class.__name__}", (mixin, loader_class), {})


def _sharded(mixin: type, loader, **fields):
    sharded = object.__new__(_sharded_class(mixin, type(loader)))
    sharded.__dict__.update(loader.__dict__)  # past DataLoader's guard on its attributes
    sharded.__dict__.update(fields)
    return sharded


def row_users(loader) -> np.ndarray:
    """The user of each row of a loader: of each interaction, or each user's own."""
    if hasattr(loader, "user_list"):  # RecBole's UserDataLoader (CDAE and other row models)
        return loader.user_list[loader.uid_field].numpy()
    uid_list = getattr(loader, "uid_list", None)  # evaluation loaders with a row per user
    if uid_list is not None and len(uid_list) == loader.sample_size:
        return np.asarray(uid_list, dtype=np.int64)
    dataset = loader._dataset
    return dataset.inter_feat[dataset.uid_field].numpy()


def _rows_in(users: np.ndarray, block: range) -> np.ndarray:
    return np.flatnonzero((users >= block.start) & (users < block.stop))


def train_shard(loader, blocks: list[range]):
    """``loader`` (a training loader) restricted to this rank's users (``blocks``: every rank's,
    from :func:`user_blocks`), in batches of its batch size divided among the ranks."""
    users = row_users(loader)
    rows = [_rows_in(users, block) for block in blocks]
    return _sharded(TrainShard, loader, positions=rows[distributed.rank()],
                    epoch_length=max(map(len, rows)),
                    step=max(1, loader.step // distributed.world_size()))


def evaluation_shard(loader, block: range):
    """``loader`` (an evaluation loader) restricted to this rank's users ``block``: the users
    whose state (candidates) the rank keeps."""
    return _sharded(EvaluationShard, loader, positions=_rows_in(row_users(loader), block))
