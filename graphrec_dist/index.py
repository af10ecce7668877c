"""Top-k item search by inner product, with each query's seen items left out.

Three indexes behind one interface, chosen by ``--index`` in ``export`` and ``serve``:

- ``exact``: a matrix multiply and ``torch.topk`` (no extra dependency; what the evaluator does).
- ``faiss``: an inverted file over k-means cells (``IndexIVFFlat``, inner product): a query scans
  the ``nprobe`` cells whose centroids score highest. Full vectors are kept, so the scores of what
  it finds are exact; what it misses lies in cells it did not visit.
- ``usearch``: a navigable small-world graph (HNSW, inner product): a query walks the graph,
  keeping ``expansion`` candidates.

The approximate ones are optional extras (``pip install 'graphrec-dist[index]'``). Seen items
(training items, or a new user's history) are left out by asking for ``k`` plus the query's
seen-count and filtering; a query left with fewer than ``k`` items (the index found too few
unseen ones) is answered exactly instead, so every list has ``min(k, unseen)`` items.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from graphrec_dist.errors import ConfigError, UserError
from graphrec_dist.models.base import EmbeddingScorer

INDEXES = ("exact", "faiss", "usearch")


class ExactIndex:
    """Every item scored: ``queries @ items.T`` and ``torch.topk``."""

    name = "exact"

    def __init__(self, items: np.ndarray, **_params):
        self.items = np.ascontiguousarray(items, dtype=np.float32)
        self._items = torch.from_numpy(self.items)

    def search_unseen(self, queries: np.ndarray, seen: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        """``top_k_unseen`` by masking the seen items' scores before ``topk`` (what the evaluator does)."""
        queries = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        k = min(k, len(self.items))
        chunk = max(1, (1 << 26) // len(self.items))
        ids, values = [], []
        for start in range(0, len(queries), chunk):
            scores = queries[start:start + chunk] @ self._items.T
            rows = np.repeat(np.arange(len(scores)), [len(s) for s in seen[start:start + chunk]])
            if len(rows):
                cols = np.concatenate(seen[start:start + chunk]).astype(np.int64)
                scores[torch.from_numpy(rows), torch.from_numpy(cols)] = float("-inf")
            top = torch.topk(scores, k, dim=1)
            ids.append(top.indices)
            values.append(top.values)
        out_ids, out_scores = torch.cat(ids).numpy(), torch.cat(values).numpy()
        out_ids[np.isneginf(out_scores)] = -1  # fewer than k unseen items
        return out_ids, out_scores


class FaissIndex:
    """faiss ``IndexIVFFlat`` with inner product: ``nlist`` k-means cells, ``nprobe`` scanned."""

    name = "faiss"

    def __init__(self, items: np.ndarray, nprobe: int = 64, nlist: Optional[int] = None, threads: int = 0,
                 seed: int = 0, **_params):
        faiss = _require("faiss", "faiss-cpu")
        self.items = items = np.ascontiguousarray(items, dtype=np.float32)  # kept for the exact fallback
        n, dim = items.shape
        if threads:
            faiss.omp_set_num_threads(threads)
        # faiss's rule of thumb is 4·sqrt(n) to 16·sqrt(n) cells; each needs ~39 training points.
        self.nlist = nlist or max(1, min(n // 39, int(4 * math.sqrt(n))))
        quantizer = faiss.IndexFlatIP(dim)
        self.index = faiss.IndexIVFFlat(quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        sample = items
        if n > 64 * self.nlist:  # k-means needs a sample (faiss asks for >= 39 per cell), not every item
            sample = items[np.random.default_rng(seed).choice(n, 64 * self.nlist, replace=False)]
        self.index.cp.seed = seed
        self.index.train(sample)
        self.index.add(items)
        self.index.nprobe = min(nprobe, self.nlist)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, ids  # id -1 where fewer than k were found


class UsearchIndex:
    """usearch HNSW: ``connectivity`` links per node, ``expansion`` candidates kept at search.

    HNSW is built for a metric, and inner product is not one: items with long vectors become hubs
    that insertions keep visiting. Here, single thread, 50,000 synthetic items built in 47 s with
    usearch's "ip" and 23 s lifted; 1,000,000 did not finish in 20 minutes with "ip". So items are
    lifted to ``[x, sqrt(M² - |x|²)]`` with ``M`` the longest norm, and queries to ``[q, 0]``: then
    ``|q' - x'|² = |q|² + M² - 2·q·x``, and the nearest item in L2 is the best by inner product.
    The price is recall per ``expansion`` (at 50,000 items, recall@100 0.74 lifted vs 0.90 "ip" at
    512), so the default expansion is larger.

    usearch is imported only here, after torch: imported before torch, it made torch.jit's
    compilation of torch_sparse's classes (a PyG import) spin for minutes.
    """

    name = "usearch"

    def __init__(self, items: np.ndarray, expansion: int = 512, connectivity: int = 16, threads: int = 0,
                 **_params):
        _require("usearch", "usearch")
        from usearch.index import Index

        self.items = items = np.ascontiguousarray(items, dtype=np.float32)  # kept for the exact fallback
        self.threads = threads
        self.expansion = expansion
        norms2 = np.einsum("nd,nd->n", items, items)
        lift = np.sqrt(np.maximum(norms2.max() - norms2, 0.0)).astype(np.float32)
        self.index = Index(ndim=items.shape[1] + 1, metric="l2sq", dtype="f32", connectivity=connectivity,
                           expansion_add=128, expansion_search=expansion)
        self.index.add(np.arange(len(items), dtype=np.uint64), np.hstack([items, lift[:, None]]), threads=threads)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        lifted = np.hstack([queries, np.zeros((len(queries), 1), dtype=np.float32)])
        self.index.expansion_search = max(self.expansion, k)  # a walk keeps at least k candidates
        found = self.index.search(lifted, k, threads=self.threads)
        keys = np.full((len(queries), k), -1, dtype=np.int64)
        if not hasattr(found, "counts"):  # usearch answers a one-row batch as a single query's Matches
            keys[0, :len(found.keys)] = found.keys
        else:
            got = np.asarray(found.keys).reshape(len(queries), -1).astype(np.int64)
            missing = np.arange(got.shape[1])[None, :] >= np.asarray(found.counts).reshape(-1, 1)
            got[missing] = -1
            keys[:, :got.shape[1]] = got
        # The scores are the true inner products of what was found (recomputed: k·d per query).
        scores = np.einsum("qd,qkd->qk", queries, self.items[np.maximum(keys, 0)])
        scores[keys < 0] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")  # L2 order equals score order up to rounding
        return np.take_along_axis(scores, order, 1), np.take_along_axis(keys, order, 1)


def build_index(kind: str, items: np.ndarray, **params):
    """The ``kind`` index over item vectors ``items [num_items, d]``."""
    classes = {"exact": ExactIndex, "faiss": FaissIndex, "usearch": UsearchIndex}
    if kind not in classes:
        raise ConfigError(f"--index {kind!r}: expected one of {', '.join(INDEXES)}")
    return classes[kind](items, **params)


def scorer_index(scorer, kind: str, params: dict):
    """The ``kind`` index over a scorer's item vectors; models without them get exact scoring only."""
    if not isinstance(scorer, EmbeddingScorer):
        raise UserError(f"--index {kind}: this model has no item embeddings to index; use --index exact")
    return build_index(kind, scorer.item_emb.float().cpu().numpy(), **params)


def top_k_unseen(index, queries: np.ndarray, seen: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best ``k`` items not in its ``seen`` array (unique ids): (ids, scores) ``[n, k]``, best first.

    A query with fewer than ``k`` unseen items has ``-1`` ids and ``-inf`` scores at the end.
    """
    if isinstance(index, ExactIndex):
        return index.search_unseen(queries, seen, k)
    n, num_items = len(queries), len(index.items)
    k = min(k, num_items)
    out_ids = np.full((n, k), -1, dtype=np.int64)
    out_scores = np.full((n, k), -np.inf, dtype=np.float32)
    # Ask for k + seen-count; queries are grouped by that count's next power of two, so one heavy
    # user does not widen every query's search (HNSW's walk grows with the number asked for).
    fetch = np.minimum(num_items, k + np.array([len(s) for s in seen], dtype=np.int64))
    buckets = np.minimum(num_items, 2 ** np.ceil(np.log2(np.maximum(fetch, 1))).astype(np.int64))
    short = []
    for size in np.unique(buckets):
        group = np.flatnonzero(buckets == size)
        scores, ids = index.search(queries[group], int(size))
        for row, q in enumerate(group):
            keep = ids[row] >= 0
            if len(seen[q]):
                keep &= ~np.isin(ids[row], seen[q])
            got_ids, got_scores = ids[row][keep][:k], scores[row][keep][:k]
            if len(got_ids) < min(k, num_items - len(seen[q])):
                short.append(q)  # the index found too few unseen items: answer this one exactly
                continue
            out_ids[q, :len(got_ids)], out_scores[q, :len(got_ids)] = got_ids, got_scores
    if short:
        out_ids[short], out_scores[short] = ExactIndex(index.items).search_unseen(queries[short],
                                                                                 [seen[q] for q in short], k)
    return out_ids, out_scores


def _require(module: str, package: str):
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(f"--index {module} needs the {package} package: pip install 'graphrec-dist[index]'") from None
