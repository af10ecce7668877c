"""Export and serving: ``graphrec-dist export`` wall time and peak memory, and ``graphrec-dist
serve`` requests/s and p50/p99 latency of ``GET /recommend`` on loopback with 1 and 8 concurrent
clients, at the plan's scale (full Goodbooks by default).

The model is graphsage with the demo preset, freshly initialised and saved as a run: neither cost
depends on the weights. Export runs as its own child (peak RSS from ``wait4``); the service runs as
``graphrec-dist serve`` in a child process and the clients are threads of this one, each keeping
one HTTP connection open and asking for a random user's top 10.
"""
from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from graphrec_dist.benchmarks.common import BenchError, call_in_child, python_cmd
from graphrec_dist.benchmarks.datasets import ensure_bundle
from graphrec_dist.benchmarks.plan import BenchPlan, bundle_dir, data_overrides
from graphrec_dist.benchmarks.quality import MAIN_PRESET


def make_run_child(run_dir: str, config_path: str, overrides: list[str]) -> dict[str, Any]:
    """A run folder holding a freshly initialised model of ``config_path`` (a child process)."""
    import torch

    from graphrec_dist import checkpoint as ckpt
    from graphrec_dist.config import load_config
    from graphrec_dist.data.store import load_bundle
    from graphrec_dist.models import build_model

    cfg = load_config(config_path, overrides)
    bundle = load_bundle(cfg.data.bundle_dir)
    torch.manual_seed(0)
    model = build_model(cfg, bundle)
    ckpt.save_checkpoint(Path(run_dir) / ckpt.BEST, {"model": model.state_dict(), "config": cfg.to_dict()})
    return {"users": bundle.num_users, "items": bundle.num_books}


def export_child(run_dir: str, out: str, k: int) -> dict[str, Any]:
    from graphrec_dist.export import export

    start = time.perf_counter()
    manifest = export(run_dir, out, k, [])
    return {"export_s": round(time.perf_counter() - start, 2), "topk_rows": manifest["topk_rows"], "k": k}


def _client(port: int, users: list[str], seconds: float, latencies: list[float], errors: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    end, i = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        conn.request("GET", f"/recommend?user={users[i % len(users)]}&k=10")
        resp = conn.getresponse()
        resp.read()
        latencies.append(time.perf_counter() - t0)
        if resp.status != 200:
            errors.append(str(resp.status))
        i += 1
    conn.close()


def load_test(port: int, users: list[str], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` threads asking for ``seconds``; requests/s and latency percentiles (ms)."""
    per_client = [[] for _ in range(clients)]
    errors: list[str] = []
    threads = [threading.Thread(target=_client, args=(port, users[c::clients], seconds, per_client[c], errors))
               for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    wall = time.perf_counter() - start
    lat = sorted(x for xs in per_client for x in xs)
    if not lat:
        raise BenchError("serve answered no request")
    pick = lambda q: 1000 * lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    return {"clients": clients, "requests": len(lat), "errors": len(errors), "requests_per_s": round(len(lat) / wall, 1),
            "p50_ms": round(pick(0.50), 2), "p99_ms": round(pick(0.99), 2), "mean_ms": round(1000 * statistics.fmean(lat), 2)}


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
        import pandas as pd

        ids = pd.read_csv(Path(bundle) / "users.csv")["user_id"]
        users = [str(v) for v in ids.sample(n=min(5000, len(ids)), random_state=0)]
        return {"load_s": round(load_s, 2), "runs": [load_test(port, users, c, seconds) for c in client_counts]}
    finally:
        proc.kill()
        proc.wait(timeout=30)
        log.close()


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
    return {"users": made["users"], "items": made["items"], "preset": MAIN_PRESET, "export": exported,
            "serve": served, "export_command": f"graphrec-dist export --run {run_dir} --out <folder> --k 100",
            "serve_command": f"graphrec-dist serve --run {run_dir} --port 0"}
