"""The built dataset that training and evaluation load: Graph3 + splits + id maps + meta.

This module is the contract between the data layer and the rest of the package.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import HeteroData

from graphrec_dist.config import RELATION_NAMES

USER = "user"
BOOK = "book"
RATES = (USER, "rates", BOOK)
REV_RATES = (BOOK, "rev_rates", USER)
# Side relations of Graph3 (book -> X) and their reverses (X -> book). book-book similarity is
# symmetric, so it is its own reverse.
SIDE_RELATIONS = {
    "tag": "has_tag",
    "author": "written_by",
    "language": "in_language",
    "year_bin": "published_in",
}
SIMILAR = (BOOK, "similar_to", BOOK)
# Splits of the inductive protocols: cold items' pairs of warm users, and cold users' pairs
# (history given at evaluation, one held-out item each for validation and test).
COLD_SPLITS = ("cold_val", "cold_test", "cold_user_history", "cold_user_val", "cold_user_test")
assert RELATION_NAMES == (*SIDE_RELATIONS, "similar"), "config.RELATION_NAMES is out of date"


def relation_edge_types(name: str) -> list[tuple[str, str, str]]:
    """The stored edge types of a side relation named as in RELATION_NAMES (both directions)."""
    if name == "similar":
        return [SIMILAR]
    if name not in SIDE_RELATIONS:
        raise KeyError(f"unknown relation {name!r}; expected one of {', '.join(RELATION_NAMES)}")
    forward = (BOOK, SIDE_RELATIONS[name], name)
    return [forward, reverse_type(forward)]


def edge_types_without(edge_types, names) -> list[tuple[str, str, str]]:
    """``edge_types`` less both directions of every side relation in ``names`` (RELATION_NAMES)."""
    dropped = {et for name in names for et in relation_edge_types(name)}
    return [tuple(et) for et in edge_types if tuple(et) not in dropped]


def reverse_type(edge_type: tuple[str, str, str]) -> tuple[str, str, str]:
    """('book','has_tag','tag') -> ('tag','rev_has_tag','book'); SIMILAR is its own reverse."""
    src, rel, dst = edge_type
    if edge_type == SIMILAR:
        return edge_type
    if rel.startswith("rev_"):
        return (dst, rel[len("rev_"):], src)
    return (dst, f"rev_{rel}", src)


def pairs_csr(pairs: torch.Tensor, num_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr [U+1], indices) of (user, book) rows in any order, books sorted within a user."""
    arr = pairs.cpu().numpy().astype(np.int64).reshape(-1, 2)
    arr = arr[np.lexsort((arr[:, 1], arr[:, 0]))]
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(arr[:, 0], minlength=num_users), out=indptr[1:])
    return indptr, arr[:, 1].copy()


def edge_key(edge_type: tuple[str, str, str]) -> str:
    """The ``src__rel__dst`` spelling used in meta.json."""
    return "__".join(edge_type)


@dataclass
class Bundle:
    """Graph3 with its splits.

    ``graph``: every node type has ``num_nodes``; every edge type has ``edge_index`` (int64, [2, E])
    and ``edge_weight`` (float32, [E]); user->book edges are TRAIN pairs only.
    ``train``/``val``/``test``: int64 [n, 2] (user, book) rows; val/test hold one row per user with
    a held-out item, users ascending. ``books``: one row per book index with at least
    ``book_id`` (original id), ``title`` and ``authors``. ``users``: ``user_id`` (original id).
    """

    graph: HeteroData
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    books: pd.DataFrame
    users: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    # The inductive protocols (docs/EVALUATION.md): COLD_SPLITS pairs and "cold_items" (int64 [n]);
    # a missing entry is empty.
    cold: dict[str, torch.Tensor] = field(default_factory=dict)
    # dist.sharding=users: this rank's block of users (data.partition.UserShard); None = every user.
    shard: Any = None
    _csr: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _content_hash: str | None = field(default=None, repr=False)

    @property
    def num_users(self) -> int:
        return int(self.graph[USER].num_nodes)

    @property
    def num_books(self) -> int:
        return int(self.graph[BOOK].num_nodes)

    @property
    def item_label(self) -> str:
        """What the items are called where users read it ("book", "movie", "item"); the node type
        stays ``book``. Bundles built before the label was stored: "book", or "item" for csv data."""
        return self.meta.get("item_label") or ("item" if self.meta.get("source") == "csv" else "book")

    def split(self, name: str) -> torch.Tensor:
        """int64 [n, 2] (user, book) rows of a split: train, val, test or one of COLD_SPLITS."""
        if name in ("train", "val", "test"):
            return getattr(self, name)
        if name not in COLD_SPLITS:
            raise ValueError(f"unknown split {name!r}; expected train, val, test or {', '.join(COLD_SPLITS)}")
        return self.cold.get(name, torch.zeros((0, 2), dtype=torch.int64))

    @property
    def cold_items(self) -> torch.Tensor:
        """int64 [n] sorted indices of the items held out of training (``data.split.cold_items``)."""
        return self.cold.get("cold_items", torch.zeros(0, dtype=torch.int64))

    def train_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """(indptr [U+1], indices) of each user's training books, books sorted within a user."""
        if self._csr is None:
            self._csr = pairs_csr(self.train, self.num_users)
        return self._csr

    def content_hash(self) -> str:
        """sha256 (first 16 hex digits) of what training reads: node counts, every edge type's
        ``edge_index`` and ``edge_weight``, and every split. Two bundles with the same node counts
        but other edges or splits differ; titles, ids and meta.json do not count. A checkpoint
        records it so that a resume on other data is refused (:func:`graphrec_dist.checkpoint.check_same_data`)."""
        if self._content_hash is None:
            digest = hashlib.sha256()

            def add(name: str, tensor: torch.Tensor) -> None:
                array = np.ascontiguousarray(tensor.detach().cpu().numpy())
                digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
                digest.update(array.tobytes())

            for ntype in sorted(self.graph.node_types):
                digest.update(f"{ntype}={int(self.graph[ntype].num_nodes)};".encode())
            for etype in sorted(self.graph.edge_types):
                add(f"{edge_key(etype)}.edge_index", self.graph[etype].edge_index)
                add(f"{edge_key(etype)}.edge_weight", self.graph[etype].edge_weight)
            for name in ("train", "val", "test", *COLD_SPLITS):
                add(name, self.split(name))
            add("cold_items", self.cold_items)
            self._content_hash = digest.hexdigest()[:16]
        return self._content_hash
