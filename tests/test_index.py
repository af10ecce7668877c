"""index.py: exact and approximate top-k search with seen items left out."""
from __future__ import annotations

import numpy as np
import pytest

from graphrec_dist.errors import ConfigError
from graphrec_dist.index import INDEXES, build_index, top_k_unseen


def _clustered(n_items: int = 3000, n_queries: int = 200, dim: int = 16, seed: int = 0):
    """Items and queries around shared centres: the structure learned embeddings have."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    items = centres[rng.integers(0, 40, n_items)] + 0.3 * rng.normal(size=(n_items, dim))
    queries = centres[rng.integers(0, 40, n_queries)] + 0.3 * rng.normal(size=(n_queries, dim))
    seen = [rng.choice(n_items, rng.integers(0, 60), replace=False) for _ in range(n_queries)]
    return items.astype(np.float32), queries.astype(np.float32), seen


def _brute_force(items, queries, seen, k):
    scores = queries @ items.T
    for q, s in enumerate(seen):
        scores[q, s] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("kind", INDEXES)
def test_every_index_leaves_seen_items_out_and_finds_the_best(kind) -> None:
    pytest.importorskip({"exact": "torch", "faiss": "faiss", "usearch": "usearch"}[kind])
    items, queries, seen = _clustered()
    ids, scores = top_k_unseen(build_index(kind, items), queries, seen, 10)
    truth = _brute_force(items, queries, seen, 10)
    assert ids.shape == (200, 10) and (ids >= 0).all()
    assert not any(np.isin(ids[q], seen[q]).any() for q in range(200))
    # the scores returned are the true inner products, best first
    true_scores = np.einsum("qd,qkd->qk", queries, items[ids])
    np.testing.assert_allclose(scores, true_scores, rtol=1e-4, atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    recall = np.mean([len(set(a) & set(t)) / 10 for a, t in zip(ids, truth)])
    assert recall == 1.0 if kind == "exact" else recall >= 0.95


def test_a_query_whose_unseen_items_the_index_misses_is_answered_exactly() -> None:
    pytest.importorskip("faiss")
    items, queries, seen = _clustered(n_items=500, n_queries=5)
    index = build_index("faiss", items, nprobe=1, nlist=50)  # one cell of ~10 items per query
    seen[0] = np.arange(0, 495)  # 5 unseen items, almost surely outside the scanned cell
    ids, scores = top_k_unseen(index, queries, seen, 10)
    assert sorted(ids[0][:5].tolist()) == [495, 496, 497, 498, 499]
    assert (ids[0][5:] == -1).all() and np.isneginf(scores[0][5:]).all()
    assert (ids[1:] >= 0).all()


def test_an_unknown_index_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--index 'annoy'"):
        build_index("annoy", np.zeros((3, 2), dtype=np.float32))
