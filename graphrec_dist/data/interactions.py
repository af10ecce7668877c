"""Graph3 interactions: positives, iterated k-core filter, id remap and leave-one-out splits.

Pure functions over numpy arrays; the order of rows is the file order (ratings first, then
to_read), which the ``last`` split mode and the random split's permutation both depend on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Interactions:
    """Positive (user, book) pairs in concatenated file order, ids remapped to 0..U-1 / 0..B-1."""

    users: np.ndarray  # int64 [n] user index
    books: np.ndarray  # int64 [n] book index
    user_ids: np.ndarray  # int64 [U] original user id of each index (sorted)
    book_ids: np.ndarray  # int64 [B] original book id of each index (sorted)


def positives(rating_users: np.ndarray, rating_books: np.ndarray, ratings: np.ndarray,
              read_users: np.ndarray, read_books: np.ndarray, min_rating: int) -> tuple[np.ndarray, np.ndarray]:
    """Ratings >= ``min_rating`` then every to_read pair; duplicates dropped keeping the first."""
    keep = ratings >= min_rating
    users = np.concatenate([rating_users[keep], read_users]).astype(np.int64)
    books = np.concatenate([rating_books[keep], read_books]).astype(np.int64)
    if len(users) == 0:
        return users, books
    # One int64 key per pair; np.unique's first-occurrence indices keep the file order.
    key = _pair_key(users, books)
    _, first = np.unique(key, return_index=True)
    first.sort()
    return users[first], books[first]


def _pair_key(users: np.ndarray, books: np.ndarray) -> np.ndarray:
    b_lo, b_span = int(books.min()), int(books.max() - books.min()) + 1
    return (users - int(users.min())) * b_span + (books - b_lo)


def k_core(users: np.ndarray, books: np.ndarray, min_user: int, min_book: int) -> np.ndarray:
    """Boolean mask of rows kept once users have >= min_user and books >= min_book rows (to a fixpoint)."""
    mask = np.ones(len(users), dtype=bool)
    if len(users) == 0:
        return mask
    _, u_inv = np.unique(users, return_inverse=True)
    _, b_inv = np.unique(books, return_inverse=True)
    while True:
        u_cnt = np.bincount(u_inv[mask], minlength=u_inv.max() + 1)
        b_cnt = np.bincount(b_inv[mask], minlength=b_inv.max() + 1)
        new = mask & (u_cnt[u_inv] >= min_user) & (b_cnt[b_inv] >= min_book)
        if new.sum() == mask.sum():
            return new
        mask = new


def remap(users: np.ndarray, books: np.ndarray) -> Interactions:
    """Sorted unique original ids -> contiguous indices, keeping both maps."""
    user_ids, u_idx = np.unique(users, return_inverse=True)
    book_ids, b_idx = np.unique(books, return_inverse=True)
    return Interactions(u_idx.astype(np.int64), b_idx.astype(np.int64),
                        user_ids.astype(np.int64), book_ids.astype(np.int64))


def leave_one_out(users: np.ndarray, num_users: int, mode: str = "random", seed: int = 42,
                  min_interactions: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices (into ``users``) of the train, validation and test pairs.

    ``random``: one ``default_rng(seed)``; users ascending; ``perm = rng.permutation(n)`` over the
    user's rows in their given order; ``perm[0]`` is test, ``perm[1]`` validation. ``last``: the
    last row is test, the one before it validation. Users with fewer than ``min_interactions``
    rows are train-only (and draw nothing from the generator). Val/test come out users ascending.
    """
    counts = np.bincount(users, minlength=num_users)
    eligible, test_pos, val_pos = held_out_positions(counts, mode, seed, min_interactions)
    return split_rows(users, counts, eligible, test_pos, val_pos)


def held_out_positions(counts: np.ndarray, mode: str = "random", seed: int = 42,
                       min_interactions: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(eligible users ascending, each one's test position, its validation position) among its rows.

    The draws depend on the per-user row counts only, so a streamed build that knows the counts
    makes exactly :func:`leave_one_out`'s draws without holding the rows (O(users) memory).
    """
    eligible = np.flatnonzero(counts >= min_interactions)
    test_pos = np.empty(len(eligible), dtype=np.int64)
    val_pos = np.empty(len(eligible), dtype=np.int64)
    if mode == "random":
        rng = np.random.default_rng(seed)
        for i, u in enumerate(eligible):
            perm = rng.permutation(int(counts[u]))
            test_pos[i], val_pos[i] = perm[0], perm[1]
    elif mode == "last":
        test_pos[:] = counts[eligible] - 1
        val_pos[:] = counts[eligible] - 2
    else:
        raise ValueError(f"unknown split mode {mode!r}; expected random or last")
    return eligible, test_pos, val_pos


def split_rows(users: np.ndarray, counts: np.ndarray, eligible: np.ndarray, test_pos: np.ndarray,
               val_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) row indices into ``users`` from :func:`held_out_positions`' picks.

    ``counts`` are ``users``' row counts per user index; positions count a user's rows in order.
    """
    order = np.argsort(users, kind="stable")  # rows grouped by user, file order within a user
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    test_rows = order[starts[eligible] + test_pos]
    val_rows = order[starts[eligible] + val_pos]
    held = np.zeros(len(users), dtype=bool)
    held[test_rows] = True
    held[val_rows] = True
    train_rows = np.flatnonzero(~held)
    return train_rows, val_rows, test_rows


@dataclass
class ColdSplit:
    """Rows (indices into the interaction arrays) of the two inductive protocols, and the rest."""

    cold_items: np.ndarray  # int64 sorted item indices with no training interaction
    cold_val: np.ndarray  # rows of warm users with a cold item, held out for validation
    cold_test: np.ndarray  # ... and for test
    user_history: np.ndarray  # rows of cold users given as their history at evaluation
    user_val: np.ndarray  # one row per cold user, held out for validation
    user_test: np.ndarray  # one row per cold user, held out for test
    warm: np.ndarray  # every other row, ascending: the regular train/val/test split is cut from these


def cold_split(users: np.ndarray, books: np.ndarray, num_users: int, num_books: int, cold_items: float,
               cold_users: float, seed: int, min_interactions: int = 3) -> ColdSplit:
    """The inductive protocols' rows (docs/EVALUATION.md).

    Cold items: ``round(cold_items * num_books)`` items drawn uniformly; every row with one leaves
    training. A warm user's cold rows are shuffled and cut in two: ``(m + c) // 2`` go to test,
    the rest to validation (``c`` a coin per user, so a single row is equally likely to be either).
    Cold users: ``round(cold_users * num_users)`` drawn among users with at least
    ``min_interactions`` rows on warm items; each gives one random row to test, another to
    validation, the others to its history. A cold user's rows with cold items are dropped.
    Each draw has its own stream of ``default_rng([seed, 0xC01D, k])``, so turning one protocol on
    leaves the other's draw unchanged.
    """
    n = len(users)
    rows = np.arange(n, dtype=np.int64)
    item_cold = np.zeros(num_books, dtype=bool)
    if cold_items > 0:
        pick = np.random.default_rng([seed, 0xC01D, 0]).choice(num_books, round(cold_items * num_books), replace=False)
        item_cold[pick] = True
    on_cold_item = item_cold[books]
    user_cold = np.zeros(num_users, dtype=bool)
    if cold_users > 0:
        warm_counts = np.bincount(users[~on_cold_item], minlength=num_users)
        eligible = np.flatnonzero(warm_counts >= min_interactions)
        count = min(round(cold_users * num_users), len(eligible))
        user_cold[np.random.default_rng([seed, 0xC01D, 1]).choice(eligible, count, replace=False)] = True
    by_cold_user = user_cold[users]
    item_rows = rows[on_cold_item & ~by_cold_user]
    to_test = _halves(users[item_rows], np.random.default_rng([seed, 0xC01D, 2]))
    user_rows = rows[by_cold_user & ~on_cold_item]
    held = _two_held_out(users[user_rows], np.random.default_rng([seed, 0xC01D, 3]))
    return ColdSplit(cold_items=np.flatnonzero(item_cold).astype(np.int64),
                     cold_val=item_rows[~to_test], cold_test=item_rows[to_test],
                     user_history=user_rows[held == 0], user_val=user_rows[held == 2],
                     user_test=user_rows[held == 1], warm=rows[~on_cold_item & ~by_cold_user])


def _rank_in_group(owners: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(random 0-based position of each row within its owner's rows, the owner's row count)."""
    order = np.lexsort((rng.random(len(owners)), owners))
    _, inverse, counts = np.unique(owners, return_inverse=True, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.empty(len(owners), dtype=np.int64)
    pos[order] = np.arange(len(owners)) - np.repeat(starts, counts)
    return pos, counts[inverse]


def _halves(owners: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """True for the rows that go to test: a random (m + coin) // 2 of each owner's m rows."""
    if len(owners) == 0:
        return np.zeros(0, dtype=bool)
    pos, m = _rank_in_group(owners, rng)
    coin = rng.integers(0, 2, size=int(owners.max()) + 1)[owners]
    return pos < (m + coin) // 2


def _two_held_out(owners: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per row: 1 = the owner's test row, 2 = its validation row, 0 = history (random picks)."""
    if len(owners) == 0:
        return np.zeros(0, dtype=np.int64)
    pos, _ = _rank_in_group(owners, rng)
    return np.where(pos == 0, 1, np.where(pos == 1, 2, 0))
