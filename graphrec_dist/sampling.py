"""Training batches: per-rank shards of the seed edges, LinkNeighborLoader subgraphs, triplet batches.

Every rank takes the same shared per-epoch permutation of the training edges (seeded by
``train.seed`` and the epoch only) and keeps its own contiguous block of it; the blocks have equal
length (the remainder is dropped), so every rank runs the same number of batches and no collective
waits on a rank that has run out. Randomness *inside* a batch (neighbour sampling, negatives) is
seeded by ``(seed, rank, epoch)`` so ranks draw different subgraphs.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Optional

import numpy as np
import torch
from torch_geometric.data import HeteroData
from torch_geometric.loader import LinkNeighborLoader
from torch_geometric.sampler import NegativeSampling

from graphrec_dist.data.bundle import BOOK, RATES, REV_RATES, USER, Bundle
from graphrec_dist.distributed import shard
from graphrec_dist.models.base import TripletBatch

# Mixed into seeds so that (seed, rank, epoch, step) tuples never collide in practice.
_RANK_STRIDE = 1_000_003
_EPOCH_STRIDE = 10_007


def sampling_seed(seed: int, rank: int, epoch: int, step: int = 0) -> int:
    """The seed of a rank's randomness in one epoch (and, for triplet batches, one step)."""
    return (seed * 7919 + rank * _RANK_STRIDE + epoch * _EPOCH_STRIDE + step * 31) % (2 ** 63 - 1)


def shard_edges(num_edges: int, epoch: int, seed: int, rank: int, world_size: int,
                cap: Optional[int] = None) -> torch.Tensor:
    """This rank's edge ids for ``epoch``: a block of a permutation shared by all ranks.

    ``cap`` (``train.edges_per_epoch``) limits the edges used by all ranks together. Each rank
    gets ``min(num_edges, cap) // world_size`` ids; the remainder is dropped.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_033 + epoch)
    perm = torch.randperm(num_edges, generator=gen)
    total = num_edges if cap is None else min(cap, num_edges)
    per_rank = total // world_size
    if per_rank == 0:
        raise ValueError(f"{total} seed edges cannot be split over {world_size} ranks")
    return perm[shard(per_rank * world_size, rank, world_size)]


def steps_per_epoch(num_edges: int, batch_size: int, world_size: int, cap: Optional[int] = None) -> int:
    """Batches each rank runs per epoch (the last one may be short; the same on every rank)."""
    total = num_edges if cap is None else min(cap, num_edges)
    return math.ceil((total // world_size) / batch_size)


def drop_seed_edges(batch: HeteroData) -> HeteroData:
    """``batch`` without its seed (user, positive book) edges in ``rates`` and ``rev_rates``.

    Otherwise the model sees each supervision edge in its own message passing and learns to
    detect it, while at evaluation the held-out edge is never in the graph. Edges are matched by
    their global (user, book) ids, so this holds however the loader numbers edges.
    """
    users, books = batch[USER].n_id, batch[BOOK].n_id
    num_books = int(books.max()) + 1 if books.numel() else 1
    seeds = users[batch[USER].src_index] * num_books + books[batch[BOOK].dst_pos_index]
    keep = {}
    for et, (u_row, b_row) in ((RATES, (0, 1)), (REV_RATES, (1, 0))):
        if et not in batch.edge_types:
            continue
        ei = batch[et].edge_index
        keep[et] = ~torch.isin(users[ei[u_row]] * num_books + books[ei[b_row]], seeds)
    return batch.edge_subgraph(keep)


def make_link_loader(bundle: Bundle, batch_size: int, num_neighbors: list[int], neg_per_pos: int = 1,
                     num_workers: int = 0, seed: int = 0, edge_ids: Optional[torch.Tensor] = None,
                     graph: Optional[HeteroData] = None, exclude_seed_edges: bool = False) -> LinkNeighborLoader:
    """A LinkNeighborLoader over training (user, book) edges with triplet negatives.

    Each batch holds the subgraph around every seed user, positive and negative book, with
    ``user.src_index``, ``book.dst_pos_index`` and ``book.dst_neg_index`` ([B, neg_per_pos])
    pointing into it. Batches follow ``edge_ids`` in order (the caller shuffles by sharding);
    ``seed`` seeds the DataLoader's own generator (its workers' seeds). With
    ``exclude_seed_edges`` each batch's seed edges are removed from it (:func:`drop_seed_edges`).
    """
    graph = bundle.graph if graph is None else graph
    pairs = bundle.train if edge_ids is None else bundle.train[edge_ids]
    return LinkNeighborLoader(
        graph,
        num_neighbors={et: list(num_neighbors) for et in graph.edge_types},
        edge_label_index=(RATES, pairs.T.contiguous()),
        neg_sampling=NegativeSampling("triplet", amount=neg_per_pos),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(seed),
        transform=drop_seed_edges if exclude_seed_edges else None,
    )


class NegativeSampler:
    """Uniform random books that are not among the user's training books.

    Rejection sampling for a few rounds, then the rare leftovers are drawn directly from the
    user's complement (a user who rated every book keeps a positive: there is nothing else).
    """

    def __init__(self, bundle: Bundle, rounds: int = 4):
        self.num_books = bundle.num_books
        self.rounds = rounds
        self.indptr, self.indices = bundle.train_csr()
        keys = bundle.train[:, 0].numpy().astype(np.int64) * self.num_books + bundle.train[:, 1].numpy()
        self._keys = np.unique(keys)

    def is_positive(self, users: torch.Tensor, books: torch.Tensor) -> torch.Tensor:
        keys = users.numpy().astype(np.int64) * self.num_books + books.numpy()
        pos = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        return torch.from_numpy(self._keys[pos] == keys)

    def sample(self, users: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
        """int64 [len(users), k] negatives for ``users``."""
        rep = users.repeat_interleave(k)
        neg = torch.randint(self.num_books, (len(rep),), generator=gen)
        for _ in range(self.rounds):
            bad = self.is_positive(rep, neg)
            if not bool(bad.any()):
                return neg.view(len(users), k)
            neg[bad] = torch.randint(self.num_books, (int(bad.sum()),), generator=gen)
        for i in torch.nonzero(self.is_positive(rep, neg)).flatten().tolist():
            u = int(rep[i])
            allowed = np.setdiff1d(np.arange(self.num_books), self.indices[self.indptr[u]:self.indptr[u + 1]])
            if len(allowed):
                neg[i] = int(allowed[int(torch.randint(len(allowed), (1,), generator=gen))])
        return neg.view(len(users), k)


class TripletLoader:
    """(user, positive, negatives) index batches for ``triplet`` models, one rank's shard.

    Negatives are uniform over all books, excluding the user's training books. Each step's
    negatives come from a generator seeded by (seed, rank, epoch, step), so a resumed run can
    start mid-epoch and draw exactly what an uninterrupted one would have.
    """

    def __init__(self, bundle: Bundle, batch_size: int, neg_per_pos: int, seed: int, rank: int,
                 world_size: int, edges_per_epoch: Optional[int] = None):
        self.bundle = bundle
        self.batch_size = batch_size
        self.neg_per_pos = neg_per_pos
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.cap = edges_per_epoch
        self.negatives = NegativeSampler(bundle)

    def __len__(self) -> int:
        return steps_per_epoch(len(self.bundle.train), self.batch_size, self.world_size, self.cap)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[TripletBatch]:
        """Batches ``start_step..`` of ``epoch`` for this rank."""
        ids = shard_edges(len(self.bundle.train), epoch, self.seed, self.rank, self.world_size, self.cap)
        for step in range(start_step, len(self)):
            rows = self.bundle.train[ids[step * self.batch_size:(step + 1) * self.batch_size]]
            seed = sampling_seed(self.seed, self.rank, epoch, step + 1)
            gen = torch.Generator().manual_seed(seed)
            users = rows[:, 0].contiguous()
            yield TripletBatch(users, rows[:, 1].contiguous(), self.negatives.sample(users, self.neg_per_pos, gen),
                               seed=(seed * 2 + 1) % (2 ** 63 - 1))


class ShardedTripletLoader:
    """``dist.sharding=users``: the batches of a one-process run, each rank keeping its users' rows.

    Every rank walks the same permutation of all training pairs (``shard_edges`` with one rank),
    so global batch ``s`` is the same for any world size; a rank yields the rows of it whose user it
    owns, in batch order, with ``total`` = the global batch's size. Negatives are drawn for the
    whole global batch from one generator that every rank seeds alike (a fixed number of
    rejection rounds, each a full draw), then each rank keeps its rows: a row's negatives never
    depend on the world size either.
    """

    def __init__(self, bundle: Bundle, batch_size: int, neg_per_pos: int, seed: int,
                 edges_per_epoch: Optional[int] = None, rounds: int = 4):
        if bundle.shard is None:
            raise ValueError("ShardedTripletLoader needs a user shard (data.partition.shard_bundle)")
        self.bundle, self.shard = bundle, bundle.shard
        self.batch_size, self.neg_per_pos, self.seed, self.cap = batch_size, neg_per_pos, seed, edges_per_epoch
        self.rounds = rounds
        self.negatives = NegativeSampler(bundle)

    def __len__(self) -> int:
        return steps_per_epoch(self.shard.num_train, self.batch_size, 1, self.cap)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[TripletBatch]:
        """Batches ``start_step..`` of ``epoch``: this rank's rows of each global batch."""
        ids = shard_edges(self.shard.num_train, epoch, self.seed, 0, 1, self.cap)
        local_ids = self.shard.train_ids
        for step in range(start_step, len(self)):
            batch = ids[step * self.batch_size:(step + 1) * self.batch_size]
            at = torch.searchsorted(local_ids, batch).clamp_max(max(len(local_ids) - 1, 0))
            mine = (local_ids[at] == batch) if len(local_ids) else torch.zeros(len(batch), dtype=torch.bool)
            rows = self.bundle.train[at[mine]]
            seed = sampling_seed(self.seed, 0, epoch, step + 1)
            users = rows[:, 0].contiguous()
            neg = self._negatives(users, mine, batch[mine], torch.Generator().manual_seed(seed))
            yield TripletBatch(users, rows[:, 1].contiguous(), neg, seed=(seed * 2 + 1) % (2 ** 63 - 1),
                               total=len(batch))

    def _negatives(self, users: torch.Tensor, mine: torch.Tensor, edge_ids: torch.Tensor,
                   gen: torch.Generator) -> torch.Tensor:
        """[len(users), k] negatives of this rank's rows (``mine`` of the global batch)."""
        shape = (len(mine), self.neg_per_pos)
        neg = torch.randint(self.negatives.num_books, shape, generator=gen)[mine]
        rep = users.repeat_interleave(self.neg_per_pos)
        for _ in range(self.rounds):  # always all rounds: every rank draws the same numbers
            redraw = torch.randint(self.negatives.num_books, shape, generator=gen)[mine]
            bad = self.negatives.is_positive(rep, neg.reshape(-1)).view_as(neg)
            neg = torch.where(bad, redraw, neg)
        bad = self.negatives.is_positive(rep, neg.reshape(-1)).view_as(neg)
        for r, j in torch.nonzero(bad).tolist():  # rare: drawn from the user's complement
            row_gen = torch.Generator().manual_seed(self.seed * 7919 + int(edge_ids[r]) * 31 + j)
            neg[r, j] = self.negatives.sample(users[r:r + 1], 1, row_gen)[0, 0]
        return neg
