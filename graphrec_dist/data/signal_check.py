"""Does a bundle hold learnable structure, and do its side relations carry signal of their own?

Cheap, model-free scorers on the test split (train items excluded, full ranking): popularity;
PureSVD on the training interactions (what the interactions alone reveal); the user's content
profile over tags and authors times popularity (what the side information adds to popularity);
and the sum of the two standardised scores (does side information add to the interactions?)::

    python -m graphrec_dist.data.signal_check data/bundles/synth-2000
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD

from graphrec_dist.data.bundle import BOOK, Bundle
from graphrec_dist.data.store import load_bundle


def _rank_metrics(scores: np.ndarray, train: sp.csr_matrix, users: np.ndarray, items: np.ndarray,
                  k: int) -> tuple[float, float]:
    """Sums of recall@k (hit of the one held-out item) and NDCG@k over the rows given."""
    scores = scores.astype(np.float64, copy=True)
    rows, cols = train[users].nonzero()
    scores[rows, cols] = -np.inf
    target = scores[np.arange(len(users)), items]
    rank = (scores > target[:, None]).sum(axis=1)
    hit = rank < k
    return float(hit.sum()), float(np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0).sum())


def _z(x: np.ndarray) -> np.ndarray:
    """Standardise each row, so that two scorers can be added."""
    return (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-12)


def _side_matrix(bundle: Bundle) -> sp.csr_matrix:
    """Books x (tags, authors): TF-IDF-like weights, rows L2-normalised."""
    g, n_books = bundle.graph, bundle.num_books
    blocks = []
    for ntype, weight in (("tag", 1.0), ("author", 3.0)):
        etypes = [e for e in g.edge_types if e[0] == BOOK and e[2] == ntype]
        if not etypes:
            continue
        ei, w = g[etypes[0]].edge_index.numpy(), g[etypes[0]].edge_weight.numpy()
        blocks.append(weight * sp.csr_matrix((w, (ei[0], ei[1])), shape=(n_books, int(g[ntype].num_nodes))))
    m = sp.hstack(blocks).tocsr() if blocks else sp.csr_matrix((n_books, 1))
    df = np.asarray((m > 0).sum(axis=0)).ravel()
    m = m @ sp.diags(np.log((1 + n_books) / (1 + df)))
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return (sp.diags(1.0 / np.maximum(norms, 1e-12)) @ m).tocsr()


def signal_check(bundle: Bundle, k: int = 20, max_users: int = 5000, svd_dim: int = 64,
                 seed: int = 0) -> dict[str, Any]:
    """Recall@k and NDCG@k of popularity, PureSVD and content scorers on (a sample of) the test split."""
    train = bundle.train.numpy()
    r = sp.csr_matrix((np.ones(len(train)), (train[:, 0], train[:, 1])), shape=(bundle.num_users, bundle.num_books))
    test = bundle.test.numpy()
    if len(test) > max_users:
        test = test[np.sort(np.random.default_rng(seed).choice(len(test), max_users, replace=False))]
    pop = np.asarray(r.sum(axis=0)).ravel()
    dim = int(min(svd_dim, min(r.shape) - 1))
    v = TruncatedSVD(n_components=dim, random_state=seed).fit(r).components_  # [dim, B]
    side = _side_matrix(bundle)
    svd = lambda u: np.asarray(r[u] @ v.T) @ v  # noqa: E731
    content = lambda u: ((r[u] @ side) @ side.T).toarray() * pop[None, :]  # noqa: E731
    scorers: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "popularity": lambda u: np.tile(pop, (len(u), 1)),
        "puresvd_interactions": svd,
        "content_x_popularity": content,
        "puresvd_plus_content": lambda u: _z(svd(u)) + 0.5 * _z(content(u)),
    }
    out: dict[str, Any] = {"k": k, "users": int(len(test))}
    for name, score in scorers.items():
        hits = ndcg = 0.0
        for start in range(0, len(test), 512):
            block = test[start:start + 512]
            h, n = _rank_metrics(score(block[:, 0]), r, block[:, 0], block[:, 1], k)
            hits, ndcg = hits + h, ndcg + n
        out[name] = {f"recall@{k}": round(hits / max(len(test), 1), 4), f"ndcg@{k}": round(ndcg / max(len(test), 1), 4)}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m graphrec_dist.data.signal_check",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--max-users", type=int, default=5000)
    args = parser.parse_args(argv)
    result = signal_check(load_bundle(args.bundle), args.k, args.max_users)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
