"""Graph3 side relations of books: tags, authors, language, year bins and TF-IDF similarity.

Each builder takes per-book columns (one row per kept book, in book-index order) and returns a
:class:`Relation`: a sorted vocabulary of the target node type and weighted (book, target) edges.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

YEAR_BIN_LABELS = ["<=1950", "1951-1970", "1971-1990", "1991-2005", "2006-2015", "2016+", "unknown"]
YEAR_BIN_EDGES = [1950, 1970, 1990, 2005, 2015, 2030]


@dataclass
class Relation:
    """Edges book -> target; ``vocab[i]`` names target node i."""

    vocab: list[str]
    src: np.ndarray  # int64 book index
    dst: np.ndarray  # int64 target index
    weight: np.ndarray  # float32


def tag_relation(book_keys: np.ndarray, tag_book_keys: np.ndarray, tag_ids: np.ndarray,
                 counts: np.ndarray, min_books: int = 10, top_per_book: int = 50) -> Relation:
    """Book-tag edges, the Graph3 way.

    ``book_keys[i]`` is the key (goodreads_book_id) of book index i; the tag rows are
    (tag_book_keys, tag_ids, counts). Rows of unkept books go; counts <= 0 become 0; tags on fewer
    than ``min_books`` distinct books go; then each book keeps its top ``top_per_book`` by count
    (ties broken by tag id). Weight log1p(count); vocabulary = sorted tag ids (as strings). Tag
    ids may be integers or strings (bring-your-own-data tags by name).
    """
    key_to_book = pd.Series(np.arange(len(book_keys), dtype=np.int64), index=book_keys)
    book = key_to_book.reindex(tag_book_keys).to_numpy()
    keep = ~np.isnan(book)
    frame = pd.DataFrame({"book": book[keep].astype(np.int64), "tag": tag_ids[keep],
                          "count": np.maximum(counts[keep].astype(np.float64), 0.0)})
    n_books = frame.groupby("tag")["book"].nunique()
    frame = frame[frame["tag"].isin(n_books.index[n_books >= min_books])]
    frame = frame.sort_values(["book", "count", "tag"], ascending=[True, False, True], kind="mergesort")
    frame = frame[frame.groupby("book").cumcount() < top_per_book]
    vocab_ids = np.unique(frame["tag"].to_numpy())
    dst = np.searchsorted(vocab_ids, frame["tag"].to_numpy())
    return Relation([str(t) for t in vocab_ids], frame["book"].to_numpy(np.int64), dst.astype(np.int64),
                    np.log1p(frame["count"].to_numpy()).astype(np.float32))


def multi_value_relation(values: pd.Series, sep: str | None = ",", missing: str | None = None) -> Relation:
    """One edge per (book, value) of a separated string column; values stripped; sorted vocabulary.

    ``missing``: the label for an empty cell (None drops such books from this relation).
    ``sep=None``: the cell is one value, taken as is.
    """
    src, labels = [], []
    for i, cell in enumerate(values.tolist()):
        parts = [] if _is_missing(cell) else ([str(cell)] if sep is None else
                                                [p.strip() for p in str(cell).split(sep)])
        parts = [p for p in dict.fromkeys(parts) if p != ""]
        if not parts and missing is not None:
            parts = [missing]
        src.extend([i] * len(parts))
        labels.extend(parts)
    vocab = sorted(set(labels))
    index = {v: j for j, v in enumerate(vocab)}
    dst = np.array([index[v] for v in labels], dtype=np.int64)
    return Relation(vocab, np.array(src, dtype=np.int64), dst, np.ones(len(dst), dtype=np.float32))


def _is_missing(cell: object) -> bool:
    return cell is None or (isinstance(cell, float) and np.isnan(cell)) or str(cell).strip() == ""


def year_bin_relation(years: pd.Series, edges: list[float] | None = None,
                      labels: list[str] | None = None) -> Relation:
    """Each book -> its year bin: (-inf, e0], (e0, e1], ...; missing or negative -> the last label.

    Years above the last edge also count as unknown. The vocabulary keeps the bins in time order
    (every bin is a node, even an empty one, so the node count is the same for every dataset).
    """
    edges = YEAR_BIN_EDGES if edges is None else edges
    labels = YEAR_BIN_LABELS if labels is None else labels
    y = pd.to_numeric(years, errors="coerce").to_numpy(np.float64)
    bins = np.searchsorted(np.asarray(edges, dtype=np.float64), y, side="left")
    unknown = np.isnan(y) | (y < 0) | (bins >= len(edges))
    bins[unknown] = len(labels) - 1
    n = len(y)
    return Relation(list(labels), np.arange(n, dtype=np.int64), bins.astype(np.int64),
                    np.ones(n, dtype=np.float32))


def normalise_text(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def similarity_edges(texts: list[str], top_k: int = 30, min_sim: float = 0.10, min_df: int = 2,
                     block: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric kNN edges of TF-IDF cosine similarity: (src, dst, weight), no self loops.

    Word (1,2)-grams, ``min_df``; each book's top ``top_k`` neighbours with similarity >= ``min_sim``;
    an edge kept by either end appears in both directions. Similarities are computed sparse x
    sparse in row blocks, so no dense B x B matrix is ever built.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    n = len(texts)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if n < 2 or top_k == 0:
        return empty
    try:
        x = TfidfVectorizer(ngram_range=(1, 2), min_df=min_df, lowercase=True).fit_transform(
            [normalise_text(t) for t in texts])
    except ValueError:  # empty vocabulary: nothing is shared by min_df books
        return empty
    x = sp.csr_matrix(x, dtype=np.float64)
    xt = x.T.tocsc()
    rows, cols, vals = [], [], []
    for start in range(0, n, block):
        sims = (x[start:start + block] @ xt).toarray()
        local = np.arange(sims.shape[0])
        sims[local, start + local] = -1.0  # exclude itself
        k = min(top_k, n - 1)
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sims, part, axis=1)
        r, c = np.nonzero(top >= min_sim - 1e-12)
        rows.append(start + r)
        cols.append(part[r, c])
        vals.append(top[r, c])
    src, dst, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    return symmetrise(src, dst, w)


def symmetrise(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union of (src,dst) and (dst,src), deduplicated, sorted by (src, dst)."""
    shape = (int(max(src.max(), dst.max())) + 1,) * 2 if len(src) else (0, 0)
    # Both directions of a pair carry the same cosine, so the union takes the max, not the sum.
    m = sp.csr_matrix((w, (src, dst)), shape=shape).maximum(sp.csr_matrix((w, (dst, src)), shape=shape)).tocoo()
    order = np.lexsort((m.col, m.row))
    return (m.row[order].astype(np.int64), m.col[order].astype(np.int64),
            m.data[order].astype(np.float32))


def co_interaction_edges(users: np.ndarray, items: np.ndarray, num_items: int, top_k: int,
                         block: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item-item edges from co-interactions: each item's ``top_k`` items by the cosine of their
    user sets, ``|U_i & U_j| / sqrt(|U_i| |U_j|)`` (duplicate pairs count once; no self loops).

    Returns (src, dst, weight) with ``dst`` the item and ``src`` one of its neighbours, so every
    item has at most ``top_k`` in-edges, sorted by (dst, src). Call it with training pairs only:
    the edges then carry nothing of validation or test. Computed in row blocks of the sparse
    item-item product, so no dense item x item matrix is built.
    """
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if top_k <= 0 or num_items < 2 or len(users) == 0:
        return empty
    num_users = int(users.max()) + 1
    x = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(num_users, num_items))
    x.data[:] = 1.0  # a repeated (user, item) pair was summed: count it once
    counts = np.asarray(x.sum(axis=0)).ravel()
    xt = x.T.tocsr()
    k = min(top_k, num_items - 1)
    dsts, srcs, vals = [], [], []
    for start in range(0, num_items, block):
        stop = min(start + block, num_items)
        co = (xt[start:stop] @ x).toarray()
        sims = co / np.sqrt(np.maximum(counts[start:stop, None] * counts[None, :], 1.0))
        local = np.arange(stop - start)
        sims[local, start + local] = 0.0
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sims, part, axis=1)
        r, c = np.nonzero(top > 0)
        dsts.append(start + r)
        srcs.append(part[r, c])
        vals.append(top[r, c])
    dst, src, w = np.concatenate(dsts), np.concatenate(srcs), np.concatenate(vals)
    order = np.lexsort((src, dst))
    return src[order].astype(np.int64), dst[order].astype(np.int64), w[order].astype(np.float32)
