"""A rank's share of a bundle under ``dist.sharding=users``: its block of users, the whole item side.

Rank r of W owns the users ``distributed.shard(num_users, r, W)``. :func:`shard_bundle` cuts a
:class:`Bundle` down to them: every edge type touching users keeps the edges of owned users only,
with user indices renumbered from 0 (so a model built on it has a user table of its rows only);
the splits keep the owned users' rows; item-side node types and relations stay whole. The
:class:`UserShard` it attaches says where the block sits globally, and carries the few global
facts a rank cannot count from its own users: each book's number of training interactions and,
per relation from users to another type, each destination's in-degree and weight total (the
normalisers of a mean over all users). Nothing here talks to other processes.

On disk (``data build --partitions N``, or the first sharded run on N ranks), a bundle keeps its
whole files and adds ``partitions/<N>/<p>/`` for p < N: the user-touching edge types, the splits,
``users.csv`` and ``shard.pt`` (the :class:`UserShard` tensors) of partition p, streamed from the
raw files by :mod:`graphrec_dist.data.stream_build` (or cut from the loaded bundle by
:func:`write_partitions` where streaming does not apply; the same files either way). A rank of W loads
the item side from the bundle's own files and only its partitions: P/W consecutive ones of a
P-partition set, P a multiple of W (:func:`load_user_shard`). Rebuilding the bundle replaces the
whole directory, partitions included, so they never outlive the bundle they were cut from.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch_geometric.data import HeteroData

from graphrec_dist.data.bundle import COLD_SPLITS, USER, Bundle, edge_key
from graphrec_dist.data.store import SPLITS, _load_npy, _save_npy, load_bundle, read_meta_strict
from graphrec_dist.errors import DataError
from graphrec_dist.io_utils import atomic_dir

PARTITIONS = "partitions"

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



# -- on disk ---------------------------------------------------------------------------------------
def partition_counts(path: str | Path) -> list[int]:
    """The partition counts N that the bundle at ``path`` has been cut into, ascending."""
    root = Path(path) / PARTITIONS
    return sorted(int(d.name) for d in root.iterdir() if d.is_dir() and d.name.isdigit()) if root.is_dir() else []


def write_partitions(bundle: Bundle, n: int) -> Path:
    """Cut ``bundle`` (loaded from its directory) into ``n`` user partitions beside its own files."""
    if bundle.path is None:
        raise ValueError("write_partitions: the bundle has no directory")
    target = Path(bundle.path) / PARTITIONS / str(n)
    with atomic_dir(target) as tmp:
        for p in range(n):
            _write_part(shard_bundle(bundle, p, n), tmp / str(p))
    return target


def _write_part(part: Bundle, out: Path) -> None:
    g = part.graph
    edges = {et: (g[et].edge_index.numpy(), g[et].edge_weight.numpy()) for et in g.edge_types if _user_side(et)}
    write_part_arrays(out, edges, {name: part.split(name).numpy() for name in SPLITS + COLD_SPLITS}, part.users)
    write_part_shard(out, part.shard)


def write_part_arrays(out: Path, edges: dict[EdgeType, tuple], splits: dict[str, object], users: pd.DataFrame) -> None:
    """A partition's user-touching edge types (local user indices), its splits and its users.csv."""
    for et, (edge_index, weight) in edges.items():
        _save_npy(out / "graph" / f"{edge_key(et)}.edge_index.npy", edge_index)
        _save_npy(out / "graph" / f"{edge_key(et)}.edge_weight.npy", weight)
    for name in SPLITS + COLD_SPLITS:
        _save_npy(out / "splits" / f"{name}.npy", splits[name])
    users.to_csv(out / "users.csv", index=False, lineterminator="\n")


def write_part_shard(out: Path, shard: UserShard) -> None:
    """A partition's ``shard.pt``: the :class:`UserShard` tensors, relations keyed as in meta.json."""
    state = asdict(shard)
    state["dst_stats"] = {edge_key(et): v for et, v in shard.dst_stats.items()}
    torch.save(state, out / "shard.pt")


def load_user_shard(path: str | Path, rank: int, world_size: int) -> Bundle:
    """Rank ``rank``'s shard of the bundle at ``path`` for ``world_size`` ranks: the item side from
    the bundle's files and P/W of its P-partition set; without partitions, the whole bundle cut in
    memory. A set whose size no W divides is a DataError naming the sets there are."""
    path = Path(path)
    counts = partition_counts(path)
    if not counts:
        return shard_bundle(load_bundle(path), rank, world_size)
    usable = [n for n in counts if n % world_size == 0]
    if not usable:
        raise DataError(f"bundle {path} is cut into {', '.join(map(str, counts))} user partitions; {world_size} "
                        f"ranks need a multiple of {world_size} (graphrec-dist data build ... --partitions "
                        f"{world_size})")
    n = usable[0]
    per = n // world_size
    parts = [_read_part(path / PARTITIONS / str(n) / str(p)) for p in range(rank * per, (rank + 1) * per)]
    return _join(path, parts, rank, world_size)


def _read_part(part: Path) -> dict:
    try:
        shard = torch.load(part / "shard.pt", weights_only=False)
        keys = sorted(f.name[:-len(".edge_index.npy")] for f in (part / "graph").glob("*.edge_index.npy"))
        edges = {tuple(key.split("__")): (_load_npy(part / "graph" / f"{key}.edge_index.npy"),
                                          _load_npy(part / "graph" / f"{key}.edge_weight.npy")) for key in keys}
        splits = {s: _load_npy(part / "splits" / f"{s}.npy") for s in SPLITS + COLD_SPLITS}
        users = pd.read_csv(part / "users.csv")
    except (OSError, ValueError, KeyError, RuntimeError, EOFError) as exc:
        raise DataError(f"user partition {part} is incomplete or corrupt ({type(exc).__name__}: {exc}); "
                        f"delete {part.parent} (it is rewritten from the bundle)") from None
    return {"shard": shard, "edges": edges, "splits": splits, "users": users}


def _join(path: Path, parts: list[dict], rank: int, world_size: int) -> Bundle:
    """One rank's :class:`Bundle` from the item-side files at ``path`` and consecutive partitions."""
    meta = read_meta_strict(path)
    first, last = parts[0]["shard"], parts[-1]["shard"]
    start = first["start"]
    graph = HeteroData()
    for nt, n in meta["counts"]["num_nodes"].items():
        graph[nt].num_nodes = last["stop"] - start if nt == USER else int(n)
    for key in meta["counts"]["num_edges"]:
        et = tuple(key.split("__"))
        if _user_side(et):
            pieces = []
            for part in parts:
                ei = part["edges"][et][0].clone()
                for r in _user_side(et):
                    ei[r] += part["shard"]["start"] - start
                pieces.append(ei)
            graph[et].edge_index = torch.cat(pieces, 1)
            graph[et].edge_weight = torch.cat([part["edges"][et][1] for part in parts])
        else:
            graph[et].edge_index = _load_npy(path / "graph" / f"{key}.edge_index.npy")
            graph[et].edge_weight = _load_npy(path / "graph" / f"{key}.edge_weight.npy")

    def split(name: str) -> torch.Tensor:
        rows = []
        for part in parts:
            pairs = part["splits"][name].clone()
            pairs[:, 0] += part["shard"]["start"] - start
            rows.append(pairs)
        return torch.cat(rows)

    cold = {name: split(name) for name in COLD_SPLITS}
    cold_items = path / "splits" / "cold_items.npy"
    if cold_items.exists():
        cold["cold_items"] = _load_npy(cold_items)
    stats = {tuple(k.split("__")): v for k, v in first["dst_stats"].items()}
    shard = UserShard(rank, world_size, start, last["stop"], first["num_users"], first["num_train"],
                      torch.cat([part["shard"]["train_ids"] for part in parts]), first["book_train_counts"], stats)
    books = pd.read_csv(path / "books.csv", keep_default_na=False, dtype={"title": str, "authors": str})
    meta["shard"] = {"rank": rank, "world_size": world_size, "users": [start, last["stop"]]}
    return Bundle(graph=graph, train=split("train"), val=split("val"), test=split("test"), books=books,
                  users=pd.concat([part["users"] for part in parts], ignore_index=True), meta=meta, path=path,
                  cold=cold, shard=shard)


__all__ = ["UserShard", "destination_stats", "load_user_shard", "partition_counts", "shard_bundle",
           "user_block", "write_part_arrays", "write_part_shard", "write_partitions"]
