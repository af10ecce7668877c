"""The interactions of a streamed build, kept on disk: read in chunks, routed to buckets of
consecutive users, deduplicated and k-core filtered with per-user and per-item counts only.

Memory is O(users + items) plus one chunk or one bucket; the rows live in temporary files under
a work directory. The result is, row for row, what :func:`interactions.positives`,
:func:`interactions.k_core` and :func:`interactions.remap` make of the whole files: the same rows,
in the same order within each user (file order: the main file, then the extra one), and the same
indices (sorted original ids).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphrec_dist.data.build import checked_ratings, interaction_columns
from graphrec_dist.data.sources import read_chunks, to_int_column
from graphrec_dist.data.spec import InteractionsSpec, SourceSpec


@dataclass
class KeptRows:
    """The rows that survive the k-core, in bucket files, and the maps from the pre-filter indices."""

    buckets: list[Path]  # int64 (user, item) pairs, pre-filter indices, deduplicated, file order
    bucket_start: np.ndarray  # int64 [nb + 1]: first pre-filter user index of each bucket
    alive_user: np.ndarray  # bool [pre-filter users]: a row is kept iff its user and item are alive
    alive_item: np.ndarray  # bool [pre-filter items]
    new_user: np.ndarray  # int64 [pre-filter users]: index after the remap, -1 if dropped
    new_item: np.ndarray  # int64 [pre-filter items]
    kept_user: np.ndarray  # int64 [U]: pre-filter index of each kept user
    user_ids: np.ndarray  # int64 [U]: original id of each kept user (sorted)
    book_ids: np.ndarray  # int64 [B]: original id of each kept item (sorted)
    user_counts: np.ndarray  # int64 [U]: kept rows per user

    @property
    def num_rows(self) -> int:
        return int(self.user_counts.sum())

    def rows_of(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(user index - ``start``, item index) of the kept rows of users ``start..stop-1``,
        each user's rows in file order."""
        users, items = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        if start < stop:
            first, last = np.searchsorted(self.bucket_start, self.kept_user[[start, stop - 1]], side="right") - 1
            for k in range(int(first), int(last) + 1):
                pairs = _load(self.buckets[k])
                new = self.new_user[pairs[:, 0]]
                keep = (self.alive_user[pairs[:, 0]] & self.alive_item[pairs[:, 1]] & (new >= start)
                        & (new < stop))
                users.append(new[keep] - start)
                items.append(self.new_item[pairs[keep, 1]])
        return np.concatenate(users), np.concatenate(items)


def stream_rows(files: dict[str, Path], spec: SourceSpec, min_rating: int, min_user: int, min_book: int,
                work: Path, buckets: int, chunk_rows: int) -> KeptRows:
    """Read, route, deduplicate and k-core filter the interaction files into ``work``."""
    raw = work / "positives.bin"
    user_ids, item_ids = _read_positives(files, spec, min_rating, raw, chunk_rows)
    paths, starts = _route(raw, user_ids, item_ids, work, buckets, chunk_rows)
    raw.unlink()
    for path in paths:
        _dedup(path, len(item_ids))
    alive_u, alive_i, u_cnt, i_cnt = _k_core(paths, len(user_ids), len(item_ids), min_user, min_book)
    keep_u, keep_i = u_cnt > 0, i_cnt > 0
    return KeptRows(paths, starts, alive_u, alive_i, np.where(keep_u, np.cumsum(keep_u) - 1, -1),
                    np.where(keep_i, np.cumsum(keep_i) - 1, -1), np.flatnonzero(keep_u), user_ids[keep_u],
                    item_ids[keep_i], u_cnt[keep_u])


def _chunks(path: Path, ispec: InteractionsSpec, chunk_rows: int) -> Iterator[tuple[np.ndarray, ...]]:
    """(users, items, ratings or None) per chunk, checked as ``build.read_interactions`` checks them."""
    for line, frame in read_chunks(path, interaction_columns(ispec), chunk_rows):
        users = to_int_column(frame[ispec.user], path, ispec.user, line).to_numpy(np.int64)
        items = to_int_column(frame[ispec.item], path, ispec.item, line).to_numpy(np.int64)
        ratings = (checked_ratings(frame[ispec.rating], ispec, path, line).to_numpy(np.float64)
                   if ispec.rating else None)
        yield users, items, ratings


def _read_positives(files: dict[str, Path], spec: SourceSpec, min_rating: int, out: Path,
                    chunk_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Spill the positive (user id, item id) pairs to ``out``: the main file's rows rated at least
    ``min_rating``, then every extra row. Returns the sorted unique user and item ids."""
    sources = [(files["interactions"], spec.interactions, True)]
    if spec.extra_interactions is not None:
        sources.append((files["extra_interactions"], spec.extra_interactions, False))
    user_ids, item_ids = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    with open(out, "wb") as fh:
        for path, ispec, rated in sources:
            for users, items, ratings in _chunks(path, ispec, chunk_rows):
                if rated and ratings is not None:
                    keep = ratings >= min_rating
                    users, items = users[keep], items[keep]
                np.stack([users, items], axis=1).tofile(fh)
                user_ids = np.union1d(user_ids, users)
                item_ids = np.union1d(item_ids, items)
    return user_ids, item_ids


def _route(raw: Path, user_ids: np.ndarray, item_ids: np.ndarray, work: Path, nb: int,
           chunk_rows: int) -> tuple[list[Path], np.ndarray]:
    """Split the spilled pairs into ``nb`` bucket files of consecutive user indices (file order kept)."""
    starts = np.array([len(user_ids) * k // nb for k in range(nb + 1)], dtype=np.int64)
    paths = [work / f"bucket{k}.bin" for k in range(nb)]
    with contextlib.ExitStack() as stack, open(raw, "rb") as src:
        outs = [stack.enter_context(open(p, "wb")) for p in paths]
        while True:
            pairs = np.fromfile(src, dtype=np.int64, count=2 * chunk_rows).reshape(-1, 2)
            if not len(pairs):
                break
            users, items = np.searchsorted(user_ids, pairs[:, 0]), np.searchsorted(item_ids, pairs[:, 1])
            bucket = np.searchsorted(starts, users, side="right") - 1
            order = np.argsort(bucket, kind="stable")
            cuts = np.concatenate([[0], np.cumsum(np.bincount(bucket, minlength=nb))])
            for k in np.flatnonzero(np.diff(cuts)):
                rows = order[cuts[k]:cuts[k + 1]]
                np.stack([users[rows], items[rows]], axis=1).tofile(outs[k])
    return paths, starts


def _load(path: Path) -> np.ndarray:
    return np.fromfile(path, dtype=np.int64).reshape(-1, 2)


def _dedup(path: Path, num_items: int) -> None:
    """Drop repeated pairs of a bucket, keeping the first (a pair's rows all share one bucket)."""
    pairs = _load(path)
    _, first = np.unique(pairs[:, 0] * num_items + pairs[:, 1], return_index=True)
    first.sort()
    pairs[first].tofile(path)


def _k_core(paths: list[Path], num_users: int, num_items: int, min_user: int,
            min_book: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``interactions.k_core``'s fixpoint with one pass over the buckets per round: a row is kept
    while its user and item are alive; each round drops those whose kept rows fall short.
    Returns (alive users, alive items, kept rows per user, kept rows per item)."""
    alive_u, alive_i = np.ones(num_users, dtype=bool), np.ones(num_items, dtype=bool)
    previous = -1
    while True:
        u_cnt, i_cnt = np.zeros(num_users, dtype=np.int64), np.zeros(num_items, dtype=np.int64)
        for path in paths:
            pairs = _load(path)
            pairs = pairs[alive_u[pairs[:, 0]] & alive_i[pairs[:, 1]]]
            u_cnt += np.bincount(pairs[:, 0], minlength=num_users)
            i_cnt += np.bincount(pairs[:, 1], minlength=num_items)
        total = int(u_cnt.sum())
        if total == previous:
            return alive_u, alive_i, u_cnt, i_cnt
        previous = total
        alive_u &= u_cnt >= min_user
        alive_i &= i_cnt >= min_book
