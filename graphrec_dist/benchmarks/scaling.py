"""Data-parallel scaling: the same short graphsage training under torchrun with 1 and 2 gloo
processes on CPU; throughput is global seed edges per second of training time.

Each run trains two epochs of ``plan.scaling_steps`` global batches; the second epoch's throughput
is reported. Threads per process come from the preset (``train.num_threads``; 1 in the demo
preset, so 2 processes use 2 cores where 1 process uses 1: the CPU stand-in for 1 vs 2 devices).
"""
from __future__ import annotations

from typing import Any

from graphrec_dist.benchmarks.datasets import ensure_bundle
from graphrec_dist.benchmarks.plan import BenchPlan, run_overrides
from graphrec_dist.benchmarks.quality import MAIN_PRESET, epoch_seconds
from graphrec_dist.benchmarks.runs import train_run
from graphrec_dist.config import load_config

THROUGHPUT_KEYS = ("edges_per_s", "seed_edges_per_s", "train_edges_per_s", "edges/s")


def throughput(row: dict[str, Any]) -> float | None:
    """Global seed edges/s that the trainer logged for an epoch."""
    for key in THROUGHPUT_KEYS:
        if row.get(key) is not None:
            return float(row[key])
    return None


def run_section(plan: BenchPlan) -> dict[str, Any]:
    users = plan.scaling_users
    ensure_bundle(plan, users)
    batch = load_config(MAIN_PRESET, run_overrides(plan, users)).train.batch_size
    # Two epochs of the same global edge count; the second (steady state: no lazy initialisation,
    # warm caches) is the figure. Validation only after the last epoch.
    overrides = run_overrides(plan, users, "model.name=graphsage", "train.epochs=2", "train.seed=0", "eval.every=2",
                              f"train.edges_per_epoch={plan.scaling_steps * batch}")
    rows = []
    for nproc in (1, 2):
        rec = train_run(plan.out_dir, f"scaling-{nproc}p-{users}", MAIN_PRESET, overrides,
                        timeout_s=4 * 3600, invocation=plan.invocation, reuse=plan.reuse, torchrun_nproc=nproc)
        last = rec["epochs"][-1] if rec["epochs"] else {}
        threads = load_config(MAIN_PRESET, overrides).train.num_threads
        rows.append({"processes": nproc, "command": rec["command"], "seed_edges_per_s": throughput(last),
                     "threads_per_process": threads or ("1 (torchrun)" if nproc > 1 else "torch default"),
                     "epoch_s": epoch_seconds(last), "peak_rss_mb": rec["peak_rss_mb"], "wall_s": rec["wall_s"]})
    base = rows[0]["seed_edges_per_s"]
    for row in rows:
        row["speedup"] = round(row["seed_edges_per_s"] / base, 3) if base and row["seed_edges_per_s"] else None
    return {"users": users, "steps": plan.scaling_steps, "backend": "gloo", "device": "cpu", "rows": rows,
            "overrides": overrides}
