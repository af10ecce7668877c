"""A rank's share of a bundle under ``dist.sharding=users``: its block of users, the whole item side.

Rank r of W owns the users ``distributed.shard(num_users, r, W)``. :func:`shard_bundle` cuts a
:class:`Bundle` down to them: every edge type touching users keeps the edges of owned users only,
with user indices renumbered from 0 (so a model built on it has a user table of its rows only);
the splits keep the owned users' rows; item-side node types and relations stay whole. The
:class:`UserShard` it attaches says where the block sits globally, and carries the few global
facts a rank cannot count from its own users: each book's number of training interactions and,
per relation from users to another type, each destination's in-degree and weight total (the
normalisers of a mean over all users). Nothing here talks to other processes.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch_geometric.data import HeteroData

from graphrec_dist.data.bundle import COLD_SPLITS, USER, Bundle

EdgeType = tuple[str, str, str]


@dataclass
class UserShard:
    """Where a rank's users sit in the whole bundle, plus the global counts it needs."""

    rank: int
    world_size: int
    start: int  # first owned global user index
    stop: int  # one past the last
    num_users: int  # global number of users
    num_train: int  # global number of training pairs
    train_ids: torch.Tensor  # int64 [local train rows]: each local row's position in the global train pairs
    book_train_counts: torch.Tensor  # int64 [num_books]: training interactions per book, all users
    # Per relation with users as source: (in-degree, weight total) of every destination over all users.
    dst_stats: dict[EdgeType, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @property
    def num_local(self) -> int:
        return self.stop - self.start


def user_block(num_users: int, rank: int, world_size: int) -> slice:
    """The users rank ``rank`` owns: the same rule as ``distributed.shard`` (kept import-free of
    torch.distributed here)."""
    return slice(num_users * rank // world_size, num_users * (rank + 1) // world_size)


def _user_side(et: EdgeType) -> tuple[int, ...]:
    """Rows of ``edge_index`` that hold user indices for edge type ``et``."""
    return tuple(i for i, nt in ((0, et[0]), (1, et[2])) if nt == USER)


def destination_stats(graph: HeteroData) -> dict[EdgeType, tuple[torch.Tensor, torch.Tensor]]:
    """Per edge type from users to another node type: (in-degree, weight total) per destination."""
    stats = {}
    for et in graph.edge_types:
        if et[0] != USER or et[2] == USER:
            continue
        dst = graph[et].edge_index[1]
        n = int(graph[et[2]].num_nodes)
        w = graph[et].get("edge_weight")
        w = torch.ones(dst.numel()) if w is None else w.double()
        stats[et] = (torch.bincount(dst, minlength=n), torch.zeros(n, dtype=torch.float64).index_add_(0, dst, w))
    return stats


def _local_pairs(pairs: torch.Tensor, block: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows of ``pairs`` whose user is in ``block``, renumbered; their positions in ``pairs``)."""
    keep = (pairs[:, 0] >= block.start) & (pairs[:, 0] < block.stop)
    ids = torch.nonzero(keep).flatten()
    local = pairs[ids].clone()
    local[:, 0] -= block.start
    return local, ids


def shard_bundle(bundle: Bundle, rank: int, world_size: int) -> Bundle:
    """Rank ``rank``'s :class:`Bundle` of ``world_size``: its users, renumbered, and the item side."""
    if bundle.shard is not None:
        raise ValueError("shard_bundle: the bundle is already a shard")
    block = user_block(bundle.num_users, rank, world_size)
    g = bundle.graph
    graph = HeteroData()
    for nt in g.node_types:
        graph[nt].num_nodes = block.stop - block.start if nt == USER else int(g[nt].num_nodes)
    for et in g.edge_types:
        ei, w = g[et].edge_index, g[et].get("edge_weight")
        rows = _user_side(et)
        if rows:
            keep = torch.ones(ei.shape[1], dtype=torch.bool)
            for r in rows:
                keep &= (ei[r] >= block.start) & (ei[r] < block.stop)
            ei = ei[:, keep].clone()
            for r in rows:
                ei[r] -= block.start
            w = None if w is None else w[keep]
        graph[et].edge_index = ei
        if w is not None:
            graph[et].edge_weight = w
    train, train_ids = _local_pairs(bundle.train, block)
    val, _ = _local_pairs(bundle.val, block)
    test, _ = _local_pairs(bundle.test, block)
    cold = {name: _local_pairs(bundle.cold[name], block)[0] for name in COLD_SPLITS if name in bundle.cold}
    if "cold_items" in bundle.cold:
        cold["cold_items"] = bundle.cold["cold_items"]
    shard = UserShard(rank, world_size, block.start, block.stop, bundle.num_users, len(bundle.train), train_ids,
                      torch.bincount(bundle.train[:, 1], minlength=bundle.num_books), destination_stats(g))
    meta = copy.deepcopy(bundle.meta)
    meta["shard"] = {"rank": rank, "world_size": world_size, "users": [block.start, block.stop]}
    users = bundle.users.iloc[block].reset_index(drop=True)
    return Bundle(graph=graph, train=train, val=val, test=test, books=bundle.books, users=users, meta=meta,
                  path=bundle.path, cold=cold, shard=shard)


__all__ = ["UserShard", "destination_stats", "shard_bundle", "user_block"]
