"""The ``evaluation`` section: the full-ranking evaluator against a bare chunked matrix multiply +
top-k (:func:`bench_evaluation`), and embedding inference + ranking time of a trained graphsage run.

Evaluator and baseline run over the same random embeddings and the same chunk size, interleaved repeat by repeat so
that a noisy shared machine slows both alike. The evaluator does more than the baseline (masks
training items, finds the exact tie-aware rank of the held-out item, per-user metrics, the
reduction), so the figure of merit is the ratio of their medians. Peak memory above the starting
resident set is sampled during each call and set against the bound implied by the chunk size.
Embedding inference is timed separately, on the quality section's graphsage run
(:func:`graphrec_dist.benchmarks.memory.eval_child`).
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import HeteroData

from graphrec_dist.benchmarks.common import call_in_child, median, repeat_timed
from graphrec_dist.benchmarks.plan import BenchPlan
from graphrec_dist.benchmarks.quality import model_run
from graphrec_dist.config import EvalConfig
from graphrec_dist.data.bundle import Bundle
from graphrec_dist.distributed import DistContext
from graphrec_dist.evaluate import evaluate_scorer
from graphrec_dist.models.base import EmbeddingScorer

MB = 1024.0 ** 2
TARGET_RATIO = 1.5


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


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def timed_with_peak(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, peak resident set above the start in MiB) of one call.

    The kernel's high-water mark, reset just before the call, is exact. Where it cannot be reset,
    a thread samples the resident set every 2 ms instead, which can miss short peaks on a busy machine.
    """
    start, peak, done = _rss_bytes(), [0], threading.Event()
    exact = _reset_peak_rss()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    watcher = threading.Thread(target=sample, daemon=True)
    if not exact:
        watcher.start()
    t0 = time.perf_counter()
    try:
        fn()
    finally:
        wall = time.perf_counter() - t0
        done.set()
        if not exact:
            watcher.join()
    top = _peak_rss_bytes() if exact else peak[0]
    return wall, max(top - start, 0) / MB


def exact_rss_accounting() -> bool:
    """Make freed large buffers leave the resident set at once, so the peak RSS shows live memory.

    glibc raises its mmap threshold after large frees and then serves the next chunk's buffers from
    heap pages that stay resident, which hides how much a pass really holds. A fixed threshold turns
    that off for the rest of the process (timing passes run before this is called).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fixed = bool(libc.mallopt(-3, 64 * 1024))  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)  # free heap pages would otherwise serve big buffers without new faults
        return fixed
    except (OSError, AttributeError):
        return False


def bench_evaluation(num_users: int = 53424, num_books: int = 10000, dim: int = 64, repeats: int = 3,
                     user_chunk: int = 1024, chunk_sweep: tuple[int, ...] = (256, 4096)) -> dict:
    """Median wall time of the evaluator vs bare chunked matmul + top-k, their ratio, peak memory.

    Timed passes alternate baseline and evaluator. Memory passes follow (one each, plus the
    evaluator at every size in ``chunk_sweep``) to show that peak memory follows the chunk size.
    """
    load_before = os.getloadavg()[0]
    bundle = synthetic_bundle(num_users, num_books)
    gen = torch.Generator().manual_seed(0)
    scorer = EmbeddingScorer(torch.randn(num_users, dim, generator=gen), torch.randn(num_books, dim, generator=gen))
    users = bundle.test[:, 0].contiguous()
    ctx = DistContext()
    k = max(EvalConfig().ks)

    def run_eval(chunk: int = user_chunk) -> dict:
        return evaluate_scorer(scorer, bundle, "test", EvalConfig(user_chunk=chunk), ctx)

    def run_bare() -> None:
        bare_topk(scorer.user_emb, scorer.item_emb, users, user_chunk, k)

    bundle.train_csr()  # built once per bundle and cached; not part of a ranking pass
    metrics = run_eval()  # warm-up: allocator and BLAS first-touch costs
    base_t, eval_t = [], []
    for _ in range(repeats):
        base_t += repeat_timed(run_bare, 1)
        eval_t += repeat_timed(run_eval, 1)
    exact = exact_rss_accounting()
    memory = {"exact_rss_accounting": exact, "bare_topk_peak_mb": timed_with_peak(run_bare)[1]}
    for chunk in (user_chunk, *chunk_sweep):
        exact_rss_accounting()
        seconds, peak = timed_with_peak(lambda chunk=chunk: run_eval(chunk))
        memory[f"evaluator_chunk_{chunk}"] = {"peak_mb": peak, "chunk_bound_mb": chunk * num_books * 5 / MB,
                                              "wall_s": seconds}
    return {
        "num_users": int(metrics["num_users"]), "num_books": num_books, "dim": dim, "user_chunk": user_chunk,
        "repeats": repeats, "torch_threads": torch.get_num_threads(), "train_pairs": int(len(bundle.train)),
        "evaluator_s": median(eval_t), "bare_topk_s": median(base_t), "ratio": median(eval_t) / median(base_t),
        "evaluator_times_s": eval_t, "bare_topk_times_s": base_t,
        # bound: float32 scores + one bool comparison per (user, book) of a chunk
        "memory": memory, "dense_users_x_books_mb": num_users * num_books * 4 / MB,
        "load_avg_1m": [load_before, os.getloadavg()[0]], "hit@10": metrics["hit@10"],
    }


def run_section(plan: BenchPlan) -> dict[str, Any]:
    args = {"num_users": plan.eval_users, "num_books": plan.eval_books, "dim": 64, "repeats": plan.repeats,
            "chunk_sweep": list(plan.eval_chunk_sweep)}
    versus = call_in_child("graphrec_dist.benchmarks.evaluation:bench_evaluation", args, plan.out_dir,
                           timeout_s=3 * 3600, tag=f"bench-evaluation-{plan.eval_users}")
    versus["args"] = args
    versus["target_ratio"] = TARGET_RATIO
    run, _ = model_run(plan, "graphsage", plan.quality_users)
    infer = call_in_child("graphrec_dist.benchmarks.memory:eval_child",
                          {"run_dir": run["run_dir"], "repeats": plan.repeats}, plan.out_dir,
                          timeout_s=3 * 3600, tag=f"inference-{plan.quality_users}")
    infer["run"] = run["command"]
    return {"versus_bare": versus, "graphsage_inference": infer}


def main(argv: list[str] | None = None) -> dict:
    """``python -m graphrec_dist.benchmarks.evaluation [--num-users N] ...``: print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m graphrec_dist.benchmarks.evaluation",
                                     description="Evaluator vs bare chunked matmul + top-k on random embeddings.")
    parser.add_argument("--num-users", type=int, default=53424)
    parser.add_argument("--num-books", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--user-chunk", type=int, default=1024)
    args = parser.parse_args(argv)
    result = bench_evaluation(args.num_users, args.num_books, args.dim, args.repeats, args.user_chunk)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
