"""A distributed run's loaders, sharded by user: each rank trains on and evaluates its own users.

Users are cut into one contiguous block per rank. Training blocks are balanced by interactions,
and every rank takes the same number of steps (a shorter shard repeats its own interactions,
as PyTorch's DistributedSampler pads), each of ``train_batch_size / world_size`` interactions,
so that DDP's average of the ranks' gradients is the gradient of the whole batch. Evaluation
blocks hold every user once, none repeated. A sharded loader is still an instance of its RecBole
class, which RecBole's trainer checks to choose how to train and evaluate.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch

from recbole_kd import distributed


def balanced_blocks(weights: np.ndarray, parts: int) -> list[np.ndarray]:
    """Positions 0..len(weights)-1 cut into ``parts`` contiguous blocks of about equal total
    weight (a user's interactions)."""
    before = np.concatenate([[0], np.cumsum(weights)[:-1]])
    cuts = np.searchsorted(before, np.arange(1, parts) * weights.sum() / parts, side="left")
    return np.split(np.arange(len(weights)), cuts)


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
    """The user of each row of a training loader: of each interaction, or each user's own."""
    if hasattr(loader, "user_list"):  # RecBole's UserDataLoader (CDAE and other row models)
        return loader.user_list[loader.uid_field].numpy()
    dataset = loader._dataset
    return dataset.inter_feat[dataset.uid_field].numpy()


def train_shard(loader):
    """``loader`` (a training loader) restricted to this rank's users, in batches of its batch
    size divided among the ranks."""
    users = row_users(loader)
    ranks, rank = distributed.world_size(), distributed.rank()
    per_user = np.bincount(users, minlength=users.max() + 1)
    blocks = balanced_blocks(per_user, ranks)
    mine = np.isin(users, blocks[rank])
    sizes = [int(per_user[block].sum()) for block in blocks]
    return _sharded(TrainShard, loader, positions=np.flatnonzero(mine),
                    epoch_length=max(sizes), step=max(1, loader.step // ranks))


def evaluation_shard(loader):
    """``loader`` (an evaluation loader) restricted to this rank's users."""
    blocks = np.array_split(np.arange(loader.sample_size), distributed.world_size())
    return _sharded(EvaluationShard, loader, positions=blocks[distributed.rank()])
