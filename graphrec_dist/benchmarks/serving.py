"""Export and serving: ``graphrec-dist export`` wall time and peak memory, ``graphrec-dist serve``
requests/s and p50/p99 latency of ``GET /recommend`` on loopback with 1 and 8 concurrent clients,
at the plan's scale (full Goodbooks by default), and the top-k indexes' recall and speed.

The indexes are measured on two tables of 64-dimensional vectors. (1) The plan's users × books,
embedded by a truncated SVD of the training interactions (PureSVD: a factor model whose vectors
have the structure learned ones have; one takes seconds, where training one at this scale takes
an hour here); each user's training books are left out, as in export and serve. (2) A synthetic
item table (``plan.serving_synthetic_items``: 100,000 reduced, 1,000,000 with ``--full``): items
and queries drawn around 1,000 shared centres, item norms log-normal (popular items have longer
vectors in trained models). Recall@k is the share of the exact top k
that the index returns.

The model is graphsage with the demo preset, freshly initialised and saved as a run: neither cost
depends on the weights. Export runs as its own child (peak RSS from ``wait4``); the service runs as
``graphrec-dist serve`` in a child process and the clients are threads of this one, each keeping
one HTTP connection open and asking for a random user's top 10.
"""
from __future__ import annotations

import http.client
import multiprocessing
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import svds

from graphrec_dist import checkpoint, run_dir as runs
from graphrec_dist.benchmarks.common import BenchError, call_in_child, python_cmd
from graphrec_dist.benchmarks.datasets import ensure_bundle
from graphrec_dist.benchmarks.plan import BenchPlan, bundle_dir, data_overrides
from graphrec_dist.benchmarks.quality import MAIN_PRESET
from graphrec_dist.config import load_config
from graphrec_dist.data.store import load_bundle
from graphrec_dist.export import export
from graphrec_dist.index import build_index, top_k_unseen

INDEX_DIM = 64
INDEX_QUERIES = {"bundle": 5000, "synthetic": 1000}  # batch-searched queries per table
LATENCY_QUERIES = 300  # searched one at a time, one thread: what one serve request costs
INDEX_SETTINGS = {"faiss": ("nprobe", [16, 64, 256]), "usearch": ("expansion", [128, 512, 2048])}


def make_run_child(run_dir: str, config_path: str, overrides: list[str]) -> dict[str, Any]:
    """A run folder holding a freshly initialised model of ``config_path`` (a child process)."""
    cfg = load_config(config_path, overrides)
    bundle = load_bundle(cfg.data.bundle_dir)
    model = runs.new_model(cfg, bundle)
    checkpoint.save_checkpoint(Path(run_dir) / runs.BEST, {"model": model.state_dict(), "config": cfg.to_dict()})
    return {"users": bundle.num_users, "items": bundle.num_books}


def export_child(run_dir: str, out: str, k: int) -> dict[str, Any]:
    start = time.perf_counter()
    manifest = export(run_dir, out, k, [])
    return {"export_s": round(time.perf_counter() - start, 2), "topk_rows": manifest["topk_rows"], "k": k}


def _client(port: int, users: list[str], start_at: float, seconds: float, out) -> None:
    """One client process: one keep-alive connection, requests back to back until the time is up."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, errors, i = [], 0, 0
    time.sleep(max(0.0, start_at - time.time()))
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        conn.request("GET", f"/recommend?user={users[i % len(users)]}&k=10")
        resp = conn.getresponse()
        resp.read()
        latencies.append(time.perf_counter() - t0)
        errors += resp.status != 200
        i += 1
    conn.close()
    out.put((latencies, errors))


def load_test(port: int, users: list[str], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` processes asking for ``seconds``; requests/s and latency percentiles (ms).

    Processes, not threads: a client thread waiting for the GIL would count that wait as the
    server's latency.
    """
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3.0  # every client starts at once, after the interpreters are up
    procs = [ctx.Process(target=_client, args=(port, users[c::clients], start_at, seconds, out))
             for c in range(clients)]
    for p in procs:
        p.start()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    lat = sorted(x for xs, _ in results for x in xs)
    errors = sum(e for _, e in results)
    if not lat:
        raise BenchError("serve answered no request")
    pick = lambda q: 1000 * lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    return {"clients": clients, "requests": len(lat), "errors": errors,
            "requests_per_s": round(len(lat) / seconds, 1), "p50_ms": round(pick(0.50), 2),
            "p99_ms": round(pick(0.99), 2), "mean_ms": round(1000 * statistics.fmean(lat), 2)}


def serve_and_measure(run_dir: Path, bundle: str, work: Path, client_counts: list[int],
                      seconds: float) -> dict[str, Any]:
    """Start ``graphrec-dist serve`` on a free port, load-test it with each client count, stop it."""
    (work / "logs").mkdir(parents=True, exist_ok=True)
    log = open(work / "logs" / "serve.log", "w")
    proc = subprocess.Popen(python_cmd("-m", "graphrec_dist", "serve", "--run", str(run_dir), "--port", "0"),
                            stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    try:
        start = time.perf_counter()
        line = proc.stdout.readline()  # "serving ... on http://127.0.0.1:PORT" once loaded
        if "http://" not in line:
            raise BenchError(f"serve did not start (see {work / 'logs' / 'serve.log'})")
        load_s = time.perf_counter() - start
        port = int(line.rsplit(":", 1)[1])
        ids = pd.read_csv(Path(bundle) / "users.csv")["user_id"]
        users = [str(v) for v in ids.sample(n=min(5000, len(ids)), random_state=0)]
        return {"load_s": round(load_s, 2), "runs": [load_test(port, users, c, seconds) for c in client_counts]}
    finally:
        proc.kill()
        proc.wait(timeout=30)
        log.close()


def svd_table(bundle_path: str, dim: int = INDEX_DIM) -> tuple:
    """PureSVD of the training interactions: (user vectors U·S, item vectors V, users' seen books)."""
    bundle = load_bundle(bundle_path)
    indptr, indices = bundle.train_csr()
    ratings = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr),
                            shape=(bundle.num_users, bundle.num_books))
    u, s, vt = svds(ratings, k=dim, random_state=0)
    seen = [indices[indptr[i]:indptr[i + 1]] for i in range(bundle.num_users)]
    return (u * s).astype(np.float32), vt.T.astype(np.float32).copy(), seen


def synthetic_table(n_items: int, n_queries: int, dim: int = INDEX_DIM, seed: int = 0) -> tuple:
    """Items and queries around 1,000 shared centres, item norms log-normal; nothing seen."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, dim)).astype(np.float32)
    items = centres[rng.integers(0, 1000, n_items)] + 0.5 * rng.normal(size=(n_items, dim)).astype(np.float32)
    items *= rng.lognormal(0.0, 0.3, size=(n_items, 1)).astype(np.float32)
    queries = centres[rng.integers(0, 1000, n_queries)] + 0.5 * rng.normal(size=(n_queries, dim)).astype(np.float32)
    return queries, items, [np.zeros(0, dtype=np.int64)] * n_queries


def measure_indexes(queries, items, seen, ks: tuple[int, ...] = (10, 100), threads: int = 2) -> dict[str, Any]:
    """Build every index over ``items``; batch throughput, one-query latency and recall@k against exact."""
    kmax = max(ks)
    out: dict[str, Any] = {"items": len(items), "queries": len(queries), "dim": items.shape[1], "indexes": []}
    truth = None
    for kind in ("exact", "faiss", "usearch"):
        start = time.perf_counter()
        index = build_index(kind, items, threads=threads)
        build_s = time.perf_counter() - start
        name, values = INDEX_SETTINGS.get(kind, (None, [None]))
        for value in values:
            if name == "nprobe":
                index.index.nprobe = min(value, index.nlist)
            elif name == "expansion":
                index.expansion = value
            start = time.perf_counter()
            ids, _ = top_k_unseen(index, queries, seen, kmax)
            batch_s = time.perf_counter() - start
            if truth is None:
                truth = ids
            lat = _one_query_latency(index, queries, seen)
            row = {"index": kind, "param": name, "value": value, "build_s": round(build_s, 2),
                   "batch_queries_per_s": round(len(queries) / batch_s, 1), "p50_ms": lat[0], "p99_ms": lat[1]}
            for k in ks:
                hits = [len(np.intersect1d(a[:k], t[:k])) / k for a, t in zip(ids, truth)]
                row[f"recall@{k}"] = round(float(np.mean(hits)), 4)
            out["indexes"].append(row)
    return out


def _one_query_latency(index, queries, seen) -> tuple[float, float]:
    """p50, p99 ms of one top-10 query at a time with one thread (what a serve request does)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    _set_index_threads(index, 1)
    try:
        times = []
        for q in range(min(LATENCY_QUERIES, len(queries))):
            start = time.perf_counter()
            top_k_unseen(index, queries[q:q + 1], [seen[q]], 10)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
        _set_index_threads(index, threads)
    return round(1000 * float(np.percentile(times, 50)), 3), round(1000 * float(np.percentile(times, 99)), 3)


def _set_index_threads(index, threads: int) -> None:
    if index.name == "faiss":
        import faiss  # an optional extra: only when a faiss index exists

        faiss.omp_set_num_threads(threads)
    elif index.name == "usearch":
        index.threads = threads


def index_child(bundle: str, synthetic_items: int) -> dict[str, Any]:
    """Both tables' index measurements (a child process: the 1M-item table's memory stays there)."""
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    user_vecs, item_vecs, seen = svd_table(bundle)
    pick = rng.choice(len(user_vecs), min(INDEX_QUERIES["bundle"], len(user_vecs)), replace=False)
    tables = {"bundle": measure_indexes(user_vecs[pick], item_vecs, [seen[u] for u in pick])}
    del user_vecs, item_vecs, seen
    queries, items, none_seen = synthetic_table(synthetic_items, INDEX_QUERIES["synthetic"])
    tables["synthetic"] = measure_indexes(queries, items, none_seen)
    return tables


def run_section(plan: BenchPlan) -> dict[str, Any]:
    users = plan.serving_users
    ensure_bundle(plan, users)
    run_dir = plan.out_dir / "runs" / f"serving-{users}"
    overrides = data_overrides(plan, users)
    made = call_in_child("graphrec_dist.benchmarks.serving:make_run_child",
                         {"run_dir": str(run_dir), "config_path": MAIN_PRESET, "overrides": overrides},
                         plan.out_dir, timeout_s=3600, tag="serving-model")
    exported = call_in_child("graphrec_dist.benchmarks.serving:export_child",
                             {"run_dir": str(run_dir), "out": str(plan.out_dir / "exports" / f"serving-{users}"),
                              "k": 100}, plan.out_dir, timeout_s=3600, tag="serving-export")
    served = serve_and_measure(run_dir, bundle_dir(plan, users), plan.out_dir, list(plan.serving_clients),
                               plan.serving_seconds)
    indexes = call_in_child("graphrec_dist.benchmarks.serving:index_child",
                            {"bundle": bundle_dir(plan, users), "synthetic_items": plan.serving_synthetic_items},
                            plan.out_dir, timeout_s=3600, tag="serving-index")
    return {"users": made["users"], "items": made["items"], "preset": MAIN_PRESET, "export": exported,
            "serve": served, "index": indexes,
            "export_command": f"graphrec-dist export --run {run_dir} --out <folder> --k 100",
            "serve_command": f"graphrec-dist serve --run {run_dir} --port 0"}
