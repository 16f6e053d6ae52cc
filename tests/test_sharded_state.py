"""Per-rank state: each rank keeps the top-N lists, draws, pools, candidates and teacher
representations of its own block of users, and what the blocks hold together is, bit for bit,
what one process holds. Blocks are built here in one process, as each rank builds its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recbole_kd.errors import KDConfigError
from recbole_kd.eval_protocol import CandidateSets
from recbole_kd.model.sampler.positives import chunk_generator
from recbole_kd.model.sampler.rank_discrepancy import RankDiscrepancySampler
from recbole_kd.model.sampler.relaxed_ranking import RelaxedRankingSampler, teacher_top_n
from recbole_kd.sharding import chunk_blocks
from tests.conftest import build, make_config
from tests.sampling_helpers import random_positives

N_USERS, N_ITEMS, CHUNK = 103, 60, 8  # 13 chunks, the last one short


def _data():
    positives = random_positives(N_USERS, N_ITEMS, most=12, seed=4)
    generator = torch.Generator().manual_seed(4)
    teacher = torch.randn(N_USERS, N_ITEMS, generator=generator)
    student = torch.randn(N_USERS, N_ITEMS, generator=generator)
    return positives, teacher, student


def _blocks(positives, ranks: int) -> list[range]:
    return chunk_blocks(np.diff(positives.indptr), CHUNK, ranks)


@pytest.mark.parametrize("ranks", [2, 3])
def test_blocks_are_whole_chunks_balanced_by_interactions(ranks):
    positives, _, _ = _data()
    interactions = np.diff(positives.indptr)
    blocks = _blocks(positives, ranks)
    assert [b.start for b in blocks[1:]] == [b.stop for b in blocks[:-1]]
    assert blocks[0].start == 0 and blocks[-1].stop == N_USERS
    assert all(b.start % CHUNK == 0 and len(b) > 0 for b in blocks)
    # The state a rank keeps per interaction (BD's pools) or per user (lists, candidates) is at
    # most an equal share plus one chunk's.
    largest_chunk = max(np.add.reduceat(interactions, np.arange(0, N_USERS, CHUNK)))
    shares = [interactions[b.start:b.stop].sum() for b in blocks]
    assert max(shares) <= interactions.sum() / ranks + largest_chunk
    assert len({len(b) for b in blocks}) > 1 or ranks == 1  # uneven blocks are exercised


def test_too_few_chunks_for_the_ranks_is_refused_with_the_fix():
    with pytest.raises(KDConfigError, match="lower kd_chunk_size"):
        chunk_blocks(np.ones(20, dtype=np.int64), 8, 4)


@pytest.mark.parametrize("ranks", [2, 3])
def test_top_n_lists_and_rrd_draws_of_the_blocks_are_those_of_one_process(ranks):
    positives, teacher, _ = _data()
    score = teacher.__getitem__
    whole_top = teacher_top_n(score, positives, 10, CHUNK, "cpu")
    settings = {"n_interesting": 3, "n_uninteresting": 7, "temperature": 2.0, "seed": 9,
                "chunk_size": CHUNK}
    whole = RelaxedRankingSampler(whole_top, positives, N_ITEMS, **settings)
    whole_draws = [whole.sample() for _ in range(2)]
    parts = []
    for block in _blocks(positives, ranks):
        top = teacher_top_n(score, positives, 10, CHUNK, "cpu", users=block)
        sampler = RelaxedRankingSampler(top, positives, N_ITEMS, users=block, **settings)
        parts.append((top, [sampler.sample() for _ in range(2)]))
        users = torch.arange(block.start, block.stop)
        assert torch.equal(sampler.for_users(users)[1], whole.for_users(users)[1])
        outside = block.stop if block.stop < N_USERS else block.start - 1  # another rank's
        with pytest.raises(RuntimeError, match="outside"):
            sampler.for_users(torch.tensor([outside]))
    assert torch.equal(torch.cat([top for top, _ in parts]), whole_top)
    for epoch in range(2):
        for column in range(2):
            joined = torch.cat([draws[epoch][column] for _, draws in parts])
            assert torch.equal(joined, whole_draws[epoch][column])


@pytest.mark.parametrize("ranks", [2, 3])
def test_bd_pools_of_the_blocks_are_those_of_one_process(ranks):
    positives, teacher, student = _data()
    settings = {"eps_t": 0.1, "eps_s": 0.01, "items_per_positive": 2, "seed": 3,
                "chunk_size": CHUNK}

    def refreshed(block=None):
        sampler = RankDiscrepancySampler(positives, N_ITEMS, users=block, **settings)
        for _ in range(2):  # the second refresh draws from its own streams
            sampler.refresh(teacher.__getitem__, student.__getitem__, epochs=3)
        return sampler

    whole = refreshed()
    blocks = [refreshed(block) for block in _blocks(positives, ranks)]
    for name in ("pool_student", "pool_teacher"):
        assert torch.equal(torch.cat([getattr(b, name) for b in blocks]), getattr(whole, name))
    sizes = torch.cat([torch.diff(b.offsets) for b in blocks])
    assert torch.equal(sizes, torch.diff(whole.offsets))
    # Batches of a block's users get the items one process gives them.
    for block, sampler in zip(_blocks(positives, ranks), blocks):
        users = torch.arange(block.start, block.stop).repeat(2)
        users = users[torch.from_numpy(np.diff(positives.indptr))[users] > 0]
        for got, want in zip(sampler.next_items(users), whole.next_items(users)):
            assert torch.equal(got, want)


@pytest.mark.parametrize("ranks", [2, 3])
def test_candidates_of_the_blocks_are_those_of_one_process(ranks):
    positives, _, _ = _data()
    coo = positives.tocoo()
    users, items = torch.from_numpy(coo.row).long(), torch.from_numpy(coo.col).long()
    draw = {"users": users, "items": items, "n_users": N_USERS, "n_items": N_ITEMS,
            "n_negatives": 20, "seed": 5, "chunk_size": CHUNK}
    whole = CandidateSets.draw(**draw)
    parts = [CandidateSets.draw(**draw, block=block) for block in _blocks(positives, ranks)]
    assert torch.equal(torch.cat([p.negatives for p in parts]), whole.negatives)
    scores = torch.randn(3, N_ITEMS)
    block = parts[-1].users
    batch = torch.tensor([block.start, block.start + 1, block.stop - 1])
    held_out = (torch.arange(3), torch.tensor([1, 2, 3]))
    assert torch.equal(parts[-1].restrict(scores, batch, *held_out),
                       whole.restrict(scores, batch, *held_out))


@pytest.mark.parametrize("ranks", [2, 3])
def test_de_teacher_representations_of_the_blocks_are_those_of_one_process(small_data, ranks):
    config = make_config("DE", small_data, kd_chunk_size=32)
    *_, model = build(config)
    (distiller,) = model.distillers
    distiller.prepare()
    whole_users, whole_items = distiller.teacher_users, distiller.teacher_items
    interactions = np.bincount(model.positives.tocoo().row, minlength=model.n_users)
    parts = []
    for block in chunk_blocks(interactions, 32, ranks):
        distiller.users = block
        distiller.prepare()
        parts.append(distiller.teacher_users)
        assert torch.equal(distiller.teacher_items, whole_items)  # item side: every item
        users = torch.tensor([block.start, block.stop - 1])
        assert torch.equal(distiller.teacher_user_rows(users), whole_users[users])
    assert torch.equal(torch.cat(parts), whole_users)


def test_each_chunk_purpose_and_step_has_its_own_stream():
    def first_draws(*key):
        return torch.rand(4, generator=chunk_generator(*key, device="cpu"))

    base = first_draws(2020, "rrd", 0, 0)
    assert torch.equal(first_draws(2020, "rrd", 0, 0), base)  # a stream is reproducible
    for other in [(2021, "rrd", 0, 0), (2020, "bd", 0, 0), (2020, "rrd", 1, 0), (2020, "rrd", 0, 1)]:
        assert not torch.equal(first_draws(*other), base), other
