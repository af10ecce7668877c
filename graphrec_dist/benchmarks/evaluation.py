"""Benchmark of the full-ranking evaluator against a bare chunked matrix multiply + top-k.

Both run over the same random embeddings and the same chunk size, interleaved repeat by repeat so
that a noisy shared machine slows both alike. The evaluator does more than the baseline (masks
training items, finds the exact tie-aware rank of the held-out item, per-user metrics, the
reduction), so the figure of merit is the ratio of their medians. Peak memory above the starting
resident set is sampled during each call and set against the bound implied by the chunk size.
Embedding inference is not part of this: the GNN's layer-wise inference is measured by its owner.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import HeteroData

from graphrec_dist.benchmarks.common import median
from graphrec_dist.config import EvalConfig
from graphrec_dist.data.bundle import Bundle
from graphrec_dist.distributed import DistContext
from graphrec_dist.evaluate import evaluate_scorer
from graphrec_dist.models.base import EmbeddingScorer

MB = 1024.0 ** 2


def synthetic_bundle(num_users: int, num_books: int, per_user: int = 80, seed: int = 0) -> Bundle:
    """Leave-one-out splits over ~``per_user`` random books per user (Goodbooks has ~80 after filtering)."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(num_users, dtype=np.int64), per_user)
    keys = np.unique(users * num_books + rng.integers(0, num_books, size=users.size))
    pairs = np.stack([keys // num_books, keys % num_books], axis=1)
    pairs = pairs[rng.permutation(len(pairs))]
    pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]  # users grouped, books shuffled within
    first = np.concatenate([[0], np.cumsum(np.bincount(pairs[:, 0], minlength=num_users))[:-1]])
    is_test, is_val = np.zeros(len(pairs), bool), np.zeros(len(pairs), bool)
    is_test[first], is_val[first + 1] = True, True
    graph = HeteroData()
    graph["user"].num_nodes, graph["book"].num_nodes = num_users, num_books
    train = torch.as_tensor(pairs[~(is_test | is_val)])
    graph["user", "rates", "book"].edge_index = train.T.contiguous()
    return Bundle(graph, train, torch.as_tensor(pairs[is_val]), torch.as_tensor(pairs[is_test]),
                  pd.DataFrame({"book_id": np.arange(num_books)}), pd.DataFrame({"user_id": np.arange(num_users)}))


def bare_topk(user_emb: torch.Tensor, item_emb: torch.Tensor, users: torch.Tensor, chunk: int, k: int) -> None:
    """The floor: score each chunk of users against every book and take the top k, nothing else."""
    for c0 in range(0, len(users), chunk):
        torch.topk(user_emb[users[c0:c0 + chunk]] @ item_emb.T, k, dim=1)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def timed_with_peak(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, peak resident set above the start in MiB, sampled every 2 ms) of one call."""
    start, peak, done = _rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    try:
        fn()
    finally:
        wall = time.perf_counter() - t0
        done.set()
        watcher.join()
    return wall, max(peak[0] - start, 0) / MB


def bench_evaluation(num_users: int = 53424, num_books: int = 10000, dim: int = 64, repeats: int = 3,
                     user_chunk: int = 1024, chunk_sweep: tuple[int, ...] = (256, 4096)) -> dict:
    """Median wall time of the evaluator vs bare chunked matmul + top-k, their ratio, peak memory.

    ``chunk_sweep``: other chunk sizes at which the evaluator runs once more, to show that its peak
    memory follows the chunk size (and not users x books).
    """
    bundle = synthetic_bundle(num_users, num_books)
    gen = torch.Generator().manual_seed(0)
    user_emb = torch.randn(num_users, dim, generator=gen)
    item_emb = torch.randn(num_books, dim, generator=gen)
    cfg = EvalConfig(user_chunk=user_chunk)
    k = max(cfg.ks)
    users = bundle.test[:, 0].contiguous()
    scorer = EmbeddingScorer(user_emb, item_emb)
    ctx = DistContext()

    def run_eval() -> None:
        run_eval.result = evaluate_scorer(scorer, bundle, "test", cfg, ctx)

    bundle.train_csr()  # built once per bundle and cached; not part of a ranking pass
    run_eval()  # warm-up: allocator and BLAS first-touch costs
    base_t, eval_t, base_mem, eval_mem = [], [], [], []
    for _ in range(repeats):
        t, m = timed_with_peak(lambda: bare_topk(user_emb, item_emb, users, user_chunk, k))
        base_t.append(t), base_mem.append(m)
        t, m = timed_with_peak(run_eval)
        eval_t.append(t), eval_mem.append(m)
    chunk_mb = user_chunk * num_books * (4 + 1) / MB  # float32 scores + one bool comparison per entry
    sweep = {}
    for chunk in chunk_sweep:
        sweep_cfg = EvalConfig(user_chunk=chunk)
        t, m = timed_with_peak(lambda: evaluate_scorer(scorer, bundle, "test", sweep_cfg, ctx))
        sweep[str(chunk)] = {"evaluator_s": t, "peak_mb": m, "chunk_bound_mb": chunk * num_books * 5 / MB}
    return {
        "num_users": int(run_eval.result["num_users"]), "num_books": num_books, "dim": dim,
        "user_chunk": user_chunk, "repeats": repeats, "torch_threads": torch.get_num_threads(),
        "train_pairs": int(len(bundle.train)),
        "evaluator_s": median(eval_t), "bare_topk_s": median(base_t),
        "ratio": median(eval_t) / median(base_t),
        "evaluator_times_s": eval_t, "bare_topk_times_s": base_t,
        "evaluator_peak_mb": max(eval_mem), "bare_topk_peak_mb": max(base_mem),
        "chunk_bound_mb": chunk_mb, "dense_users_x_books_mb": num_users * num_books * 4 / MB,
        "chunk_sweep": sweep, "hit@10": run_eval.result["hit@10"],
    }
