"""Offline Goodbooks-shaped interactions: ratings.csv and to_read.csv from a documented model.

The generative model (docs/DATA.md has the full story):

1. Book vectors. ``v_b = normalise(w_tag * t_b + w_author * a_{author(b)} + w_series * s_{series(b)}
   + w_hidden * h_b)`` in ``DIM`` dimensions. ``t_b`` is the book's position in tag space (truncated
   SVD of its TF-IDF weighted tag counts), ``a`` a random vector per first author, ``s`` a random
   vector per series parsed from the title, ``h_b`` a random vector per book that no side
   information reveals: only co-reading does.
2. Users. A taste vector from one to three anchor books (popularity-weighted) plus noise; one to
   three favourite authors among the anchors' and top-affinity books.
3. Activity. Ratings per user ``20 + round(180 * Beta(2.1, 2.0))`` (mean about 112, range 20..200);
   to_read per user geometric with mean ``TO_READ_MEAN``, zero for some users.
4. Choice. Each user draws ``n_ratings + n_to_read`` distinct books without replacement with
   probability proportional to ``ratings_count^POP_EXP * exp(BETA * <u, v_b> + LOYALTY * fav_author)``
   (Gumbel top-k); a random subset of them becomes to_read.
5. Ratings. ``z = <u, v_b> * RATING_SLOPE + LOYALTY_RATING * fav_author + user bias + noise``,
   mapped to 1..5 by global quantiles matching the Goodbooks rating shares.
6. Time. Each user's rows get increasing times from a random start, except that books of one
   series are read in volume order; ratings.csv is sorted by time.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from graphrec_dist.data.sources import find_file, read_table
from graphrec_dist.data.synth_books import generate_books
from graphrec_dist.errors import ConfigError
from graphrec_dist.io_utils import atomic_dir

GENERATOR_VERSION = 2
DIM = 24
W_TAG, W_AUTHOR, W_SERIES, W_HIDDEN = 1.0, 0.55, 0.45, 0.65
BETA = 7.0
POP_EXP = 0.75
LOYALTY = 1.5
RATING_SLOPE = 2.5
LOYALTY_RATING = 0.8
TO_READ_MEAN = 18.5
TO_READ_ZERO = 0.09
RATING_SHARES = [0.021, 0.066, 0.233, 0.358, 0.322]  # Goodbooks ratings 1..5
BOOK_FILES = ("books", "tags", "book_tags")
STAMP = "synth.json"


def stamp_for(users: int, seed: int, books_from: str | None) -> dict[str, Any]:
    """What a generated raw directory records about how it was made."""
    return {"generator_version": GENERATOR_VERSION, "users": int(users), "seed": int(seed),
            "books_from": None if books_from is None else str(Path(books_from).resolve())}


def read_stamp(raw_dir: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(raw_dir) / STAMP).read_text())
    except (OSError, ValueError):
        return None


def generate(out: str | Path, users: int = 2000, seed: int = 0, books_from: str | None = None) -> Path:
    """Write the five Goodbooks CSV files (and a stamp) into ``out``, atomically as a directory."""
    if users < 1:
        raise ConfigError(f"synth: --users must be a positive integer, got {users}")
    out = Path(out)
    with atomic_dir(out) as tmp:
        if books_from is not None:
            for stem in BOOK_FILES:
                src = find_file(books_from, stem)
                shutil.copyfile(src, tmp / src.name)
        else:
            generate_books(tmp, n_books=int(np.clip(2 * users, 500, 10000)), seed=seed)
        books = read_table(find_file(tmp, "books"), ["book_id", "goodreads_book_id", "authors", "title",
                                                     "ratings_count"], int_columns=["book_id", "goodreads_book_id"])
        tags = read_table(find_file(tmp, "book_tags"), ["goodreads_book_id", "tag_id", "count"],
                          int_columns=["goodreads_book_id", "tag_id"])
        ratings, to_read = generate_interactions(books, tags, users, seed)
        ratings.to_csv(tmp / "ratings.csv", index=False, lineterminator="\n")
        to_read.to_csv(tmp / "to_read.csv", index=False, lineterminator="\n")
        (tmp / STAMP).write_text(json.dumps(stamp_for(users, seed, books_from), sort_keys=True) + "\n")
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def tag_factors(books: pd.DataFrame, tags: pd.DataFrame, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors of books in tag space: truncated SVD of TF-IDF weighted log tag counts."""
    # Imported here, not at the top: sklearn adds ~5 s (measured) to every start of `train`.
    from sklearn.decomposition import TruncatedSVD

    row = pd.Series(np.arange(len(books)), index=books["goodreads_book_id"].to_numpy())
    b = row.reindex(tags["goodreads_book_id"].to_numpy()).to_numpy()
    ok = ~np.isnan(b)
    tag_codes, tag_idx = np.unique(tags["tag_id"].to_numpy()[ok], return_inverse=True)
    counts = np.log1p(np.maximum(pd.to_numeric(tags["count"], errors="coerce").fillna(0).to_numpy()[ok], 0))
    m = sp.csr_matrix((counts, (b[ok].astype(np.int64), tag_idx)), shape=(len(books), len(tag_codes)))
    df = np.asarray((m > 0).sum(axis=0)).ravel()
    m = m[:, df >= min(10, max(1, len(books) // 50))]  # rare tags carry noise, not taste
    df = df[df >= min(10, max(1, len(books) // 50))]
    m = m @ sp.diags(np.log((1 + len(books)) / (1 + df)))
    k = int(min(dim, max(1, min(m.shape) - 1)))
    svd = TruncatedSVD(n_components=k, n_iter=3, random_state=int(rng.integers(2**31)))
    z = svd.fit_transform(m)
    z = z - z.mean(axis=0)  # the first component is "has many tags"; taste lives in the rest
    out = np.zeros((len(books), dim))
    out[:, :k] = z
    return _unit(out)


def _group_vectors(labels: list[str], dim: int, rng: np.random.Generator) -> np.ndarray:
    """A random unit vector per distinct label, zero for an empty label."""
    vocab, idx = np.unique(np.array(labels, dtype=object), return_inverse=True)
    vec = _unit(rng.normal(size=(len(vocab), dim)))
    vec[vocab == ""] = 0.0
    return vec[idx]


def parse_series(titles: list[str]) -> tuple[list[str], np.ndarray]:
    """Series name ("" if none) and volume (nan if none) from Goodreads titles like "X (Name, #2)"."""
    names, volumes = [], np.full(len(titles), np.nan)
    for i, title in enumerate(titles):
        m = re.search(r"\(([^()#]+),\s*#(\d+(?:\.\d+)?)[^()]*\)\s*$", str(title))
        names.append(m.group(1).strip() if m else "")
        if m:
            volumes[i] = float(m.group(2))
    return names, volumes


def book_vectors(books: pd.DataFrame, tags: pd.DataFrame, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(unit book vectors [B, DIM], first-author index [B], series index [B] (-1: none), volume [B])."""
    first_author = books["authors"].fillna("").astype(str).str.split(",").str[0].str.strip().tolist()
    series, volume = parse_series(books["title"].tolist())
    v = (W_TAG * tag_factors(books, tags, DIM, rng) + W_AUTHOR * _group_vectors(first_author, DIM, rng)
         + W_SERIES * _group_vectors(series, DIM, rng) + W_HIDDEN * _unit(rng.normal(size=(len(books), DIM))))
    _, author_idx = np.unique(np.array(first_author, dtype=object), return_inverse=True)
    names, series_idx = np.unique(np.array(series, dtype=object), return_inverse=True)
    series_idx = np.where(np.array(series, dtype=object) == "", -1, series_idx)
    return _unit(v).astype(np.float32), author_idx.astype(np.int64), series_idx.astype(np.int64), volume


def generate_interactions(books: pd.DataFrame, tags: pd.DataFrame, n_users: int, seed: int,
                          chunk: int = 1024) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ratings (user_id, book_id, rating; time-sorted) and to_read (user_id, book_id) frames."""
    rng = np.random.default_rng([seed, 2])
    v, author, series, volume = book_vectors(books, tags, rng)
    pop = pd.to_numeric(books["ratings_count"], errors="coerce").fillna(1).clip(lower=1).to_numpy(np.float64)
    log_pop = (POP_EXP * np.log(pop)).astype(np.float32)
    n_books = len(books)
    n_rate = np.minimum(20 + np.round(180 * rng.beta(2.1, 2.0, size=n_users)).astype(np.int64), n_books // 2)
    n_read = np.where(rng.random(n_users) < TO_READ_ZERO, 0, rng.geometric(1 / TO_READ_MEAN, size=n_users))
    n_read = np.minimum(n_read, n_books // 4)
    anchors_p = pop / pop.sum()
    parts = []
    for start in range(0, n_users, chunk):
        idx = np.arange(start, min(start + chunk, n_users))
        parts.append(_chunk(rng, idx, v, author, log_pop, anchors_p, n_rate[idx], n_read[idx]))
    users, picks, z, is_read = (np.concatenate([p[i] for p in parts]) for i in range(4))
    ratings, times = _ratings(rng, users, picks, z, is_read, n_users)
    ru, rb = users[~is_read], picks[~is_read]
    times = _series_in_order(times, ru, series[rb], volume[rb])
    by_time = np.argsort(times, kind="stable")
    book_ids = books["book_id"].to_numpy(np.int64)
    rated = pd.DataFrame({"user_id": ru[by_time] + 1, "book_id": book_ids[rb[by_time]],
                          "rating": ratings[by_time].astype(np.int64)})
    to_read = pd.DataFrame({"user_id": users[is_read] + 1, "book_id": book_ids[picks[is_read]]})
    return rated, to_read


def _chunk(rng: np.random.Generator, idx: np.ndarray, v: np.ndarray, author: np.ndarray, log_pop: np.ndarray,
           anchors_p: np.ndarray, n_rate: np.ndarray, n_read: np.ndarray) -> tuple[np.ndarray, ...]:
    """Choices of one block of users: (user, book, rating score z, is_to_read) per picked pair."""
    c, n_books = len(idx), len(v)
    n_anchor = rng.integers(1, 4, size=c)
    anchors = rng.choice(n_books, size=(c, 3), p=anchors_p)
    mask = np.arange(3)[None, :] < n_anchor[:, None]
    taste = _unit((v[anchors] * mask[..., None]).sum(axis=1) + 0.35 * rng.normal(size=(c, v.shape[1])))
    affinity = (taste.astype(np.float32) @ v.T)  # [c, B]
    fav = np.zeros((c, n_books), dtype=bool)
    n_fav = rng.integers(0, 4, size=c)
    top = np.argpartition(-affinity, 20, axis=1)[:, :20]
    for r in range(c):
        cand = np.concatenate([anchors[r, : n_anchor[r]], rng.choice(top[r], size=3, replace=False)])
        fav[r] = np.isin(author, author[rng.choice(cand, size=n_fav[r], replace=False)]) if n_fav[r] else False
    keys = BETA * affinity + LOYALTY * fav + log_pop[None, :] + rng.gumbel(size=(c, n_books)).astype(np.float32)
    total = n_rate + n_read
    kmax = int(total.max())
    cand = np.argpartition(-keys, kmax - 1, axis=1)[:, :kmax]
    cand = np.take_along_axis(cand, np.argsort(-np.take_along_axis(keys, cand, axis=1), axis=1), axis=1)
    users, picks, z, is_read = [], [], [], []
    bias = rng.normal(0, 0.5, size=c)
    for r in range(c):
        chosen = cand[r, : total[r]]
        read = np.zeros(total[r], dtype=bool)
        read[rng.choice(total[r], size=n_read[r], replace=False)] = True
        users.append(np.full(total[r], idx[r]))
        picks.append(chosen)
        z.append(RATING_SLOPE * affinity[r, chosen] + LOYALTY_RATING * fav[r, chosen] + bias[r]
                 + rng.normal(0, 0.6, size=total[r]))
        is_read.append(read)
    return np.concatenate(users), np.concatenate(picks), np.concatenate(z), np.concatenate(is_read)


def _ratings(rng: np.random.Generator, users: np.ndarray, picks: np.ndarray, z: np.ndarray, is_read: np.ndarray,
             n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Ratings 1..5 of the rated rows by global quantile of z, and per-user increasing times."""
    rate = ~is_read
    zr = z[rate]
    cuts = np.quantile(zr, np.cumsum(RATING_SHARES)[:-1]) if len(zr) else np.zeros(4)
    rating = 1 + np.searchsorted(cuts, zr, side="right")
    ru = users[rate]
    start = rng.uniform(0, 1000, size=n_users)
    gaps = rng.exponential(1.0, size=len(ru))
    order = np.argsort(ru, kind="stable")
    csum = np.cumsum(gaps[order])
    first = np.searchsorted(ru[order], np.arange(n_users))
    before = np.concatenate([[0.0], csum])[first]  # gaps of earlier users in the sorted order
    times = np.empty(len(ru))
    times[order] = start[ru[order]] + csum - before[ru[order]]
    return rating, times


def _series_in_order(times: np.ndarray, users: np.ndarray, series: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """Within a user, books of one series are read in volume order: their times are reassigned."""
    idx = np.flatnonzero((series >= 0) & ~np.isnan(volume))
    if len(idx) == 0:
        return times
    by_volume = idx[np.lexsort((volume[idx], series[idx], users[idx]))]
    by_time = idx[np.lexsort((times[idx], series[idx], users[idx]))]
    out = times.copy()
    out[by_volume] = times[by_time]
    return out
