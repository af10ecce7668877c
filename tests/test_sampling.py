import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import HeteroData

from graphrec_dist.data.bundle import RATES, REV_RATES, Bundle
from graphrec_dist.models.base import training_graph
from graphrec_dist.sampling import NegativeSampler, TripletLoader, make_link_loader, shard_edges, steps_per_epoch


def toy_bundle(num_users: int = 20, num_books: int = 15, per_user: int = 5, seed: int = 0) -> Bundle:
    """A tiny Graph3; the same ``seed`` gives the same bundle whatever ran before (no global RNG)."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    pairs = np.array([(u, b) for u in range(num_users) for b in rng.choice(num_books, per_user, replace=False)])
    train = torch.from_numpy(pairs).long()
    g = HeteroData()
    g["user"].num_nodes = num_users
    g["book"].num_nodes = num_books
    g["tag"].num_nodes = 4
    g[RATES].edge_index = train.T.contiguous()
    g[RATES].edge_weight = torch.ones(len(train))
    g[REV_RATES].edge_index = train.T.flip(0).contiguous()
    g[REV_RATES].edge_weight = torch.ones(len(train))
    bt = torch.stack([torch.arange(num_books), torch.arange(num_books) % 4])
    g["book", "has_tag", "tag"].edge_index = bt
    g["book", "has_tag", "tag"].edge_weight = torch.rand(num_books, generator=gen)
    g["tag", "rev_has_tag", "book"].edge_index = bt.flip(0)
    g["tag", "rev_has_tag", "book"].edge_weight = torch.rand(num_books, generator=gen)
    held = torch.stack([torch.arange(num_users), torch.zeros(num_users, dtype=torch.long)], 1)
    return Bundle(g, train, held, held, pd.DataFrame({"book_id": np.arange(num_books), "title": "t", "authors": "a"}),
                  pd.DataFrame({"user_id": np.arange(num_users)}))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_shards_are_disjoint_equal_and_cover_the_shared_permutation(world: int) -> None:
    shards = [shard_edges(100, epoch=3, seed=7, rank=r, world_size=world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == 100 // world
    union = torch.cat(shards)
    assert len(torch.unique(union)) == len(union)
    # Every rank derives the same permutation: rank 0's block is the same whatever the caller.
    assert torch.equal(shard_edges(100, 3, 7, 0, world), shards[0])


def test_shards_change_with_the_epoch_and_respect_the_cap() -> None:
    assert not torch.equal(shard_edges(100, 0, 7, 0, 1), shard_edges(100, 1, 7, 0, 1))
    assert len(shard_edges(100, 0, 7, 1, 2, cap=30)) == 15
    assert steps_per_epoch(100, 8, 2, cap=30) == 2  # 15 edges per rank, batches of 8
    assert steps_per_epoch(101, 10, 2) == 5


def test_negative_sampler_avoids_training_books() -> None:
    bundle = toy_bundle()
    sampler = NegativeSampler(bundle)
    users = torch.arange(20).repeat(10)
    neg = sampler.sample(users, 3, torch.Generator().manual_seed(0))
    assert neg.shape == (200, 3)
    assert not sampler.is_positive(users.repeat_interleave(3), neg.flatten()).any()
    assert sampler.is_positive(bundle.train[:5, 0], bundle.train[:5, 1]).all()


def test_triplet_loader_equal_batches_per_rank_and_resumable_mid_epoch() -> None:
    bundle = toy_bundle()
    loaders = [TripletLoader(bundle, 16, 2, seed=1, rank=r, world_size=2) for r in range(2)]
    runs = [list(ld.epoch(0)) for ld in loaders]
    assert len(runs[0]) == len(runs[1]) == len(loaders[0]) == 4  # 100 edges / 2 ranks = 50 -> 4 batches
    assert runs[0][0].neg.shape == (16, 2)
    again = list(loaders[0].epoch(0, start_step=2))
    assert all(torch.equal(a.neg, b.neg) and torch.equal(a.users, b.users) for a, b in zip(again, runs[0][2:]))
    # Positives are real training pairs.
    keys = set(map(tuple, bundle.train.tolist()))
    assert all((int(u), int(p)) in keys for b in runs[0] for u, p in zip(b.users, b.pos))


def test_link_loader_puts_every_seed_and_negative_in_the_subgraph() -> None:
    bundle = toy_bundle()
    ids = torch.arange(12)
    torch.manual_seed(0)
    batch = next(iter(make_link_loader(bundle, 12, [3, 3], neg_per_pos=2, edge_ids=ids)))
    users = batch["user"].n_id[batch["user"].src_index]
    pos = batch["book"].n_id[batch["book"].dst_pos_index]
    assert torch.equal(users, bundle.train[ids, 0]) and torch.equal(pos, bundle.train[ids, 1])
    assert batch["book"].dst_neg_index.shape == (12, 2)
    assert int(batch["book"].dst_neg_index.max()) < batch["book"].num_nodes


def test_link_loader_is_deterministic_for_a_seed() -> None:
    bundle = toy_bundle()
    draws = []
    for _ in range(2):
        torch.manual_seed(5)
        batch = next(iter(make_link_loader(bundle, 10, [2, 2], edge_ids=torch.arange(10))))
        draws.append((batch["book"].n_id.clone(), batch["book"].dst_neg_index.clone()))
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])


def test_toy_bundle_does_not_depend_on_the_global_rng() -> None:
    torch.manual_seed(1)
    first = toy_bundle(seed=3)
    torch.manual_seed(2)
    second = toy_bundle(seed=3)
    for et in first.graph.edge_types:
        assert torch.equal(first.graph[et].edge_weight, second.graph[et].edge_weight), et
    assert not torch.equal(first.graph["book", "has_tag", "tag"].edge_weight,
                           toy_bundle(seed=4).graph["book", "has_tag", "tag"].edge_weight)


def test_training_graph_user_book_only() -> None:
    g = training_graph(toy_bundle(), user_book_only=True)
    assert set(g.edge_types) == {RATES, REV_RATES}


def _global_pairs(batch, et, user_row: int) -> set[tuple[int, int]]:
    ei = batch[et].edge_index
    users, books = batch["user"].n_id[ei[user_row]], batch["book"].n_id[ei[1 - user_row]]
    return set(zip(users.tolist(), books.tolist()))


@pytest.mark.parametrize("exclude", [True, False])
def test_seed_edges_leave_the_message_passing_graph_only_when_excluded(exclude: bool) -> None:
    bundle = toy_bundle()
    ids = torch.arange(0, 100, 5)
    # Full fanout: without exclusion every seed edge is certainly in the sampled subgraph.
    batch = next(iter(make_link_loader(bundle, len(ids), [-1, -1], edge_ids=ids, exclude_seed_edges=exclude)))
    seeds = set(map(tuple, bundle.train[ids].tolist()))
    assert set(zip(batch["user"].n_id[batch["user"].src_index].tolist(),
                   batch["book"].n_id[batch["book"].dst_pos_index].tolist())) == seeds
    rates, rev = _global_pairs(batch, RATES, 0), _global_pairs(batch, REV_RATES, 1)
    if exclude:
        assert not seeds & rates and not seeds & rev
        # Only the seed edges go: every other training edge of the seed users is still there.
        seed_users = {u for u, _ in seeds}
        others = {tuple(p) for p in bundle.train.tolist() if p[0] in seed_users} - seeds
        assert others <= rates and others <= rev
        assert len(batch[RATES].edge_weight) == batch[RATES].edge_index.shape[1] == len(batch[RATES].e_id)
    else:
        assert seeds <= rates and seeds <= rev
