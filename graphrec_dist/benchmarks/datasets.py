"""The generated datasets the benchmarks run on, built once per size and invocation by the data
team's ``bench_build`` (each step in its own process), so the build's seconds and peak RSS are
measured where the bundle is made. Training runs then find the bundle in the cache.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from graphrec_dist.benchmarks.common import call_in_child
from graphrec_dist.benchmarks.data_build import bench_build
from graphrec_dist.benchmarks.plan import BenchPlan, bundle_dir
from graphrec_dist.data.store import load_bundle
from graphrec_dist.io_utils import write_json_atomic


def build_child(users: int, work_dir: str) -> dict[str, Any]:
    """The data team's :func:`graphrec_dist.benchmarks.data_build.bench_build` (generate, build, load: each in
    its own process), plus the size of what was built."""
    steps = bench_build(users=users, work_dir=work_dir, seed=0)
    bundle = load_bundle(Path(work_dir) / f"bundle-{users}")
    return {
        "steps": steps, "synth_s": steps["synth"]["seconds"], "build_s": steps["build"]["seconds"],
        "load_s": steps["load"]["seconds"],
        "peak_rss_mb": max(steps[k]["peak_rss_mb"] for k in ("synth", "build", "load")),
        "num_users": bundle.num_users, "num_books": bundle.num_books, "train_edges": int(bundle.train.shape[0]),
        "graph_edges": int(sum(s.edge_index.shape[1] for s in bundle.graph.edge_stores)),
    }


def ensure_bundle(plan: BenchPlan, users: int, timeout_s: float = 7200) -> dict[str, Any]:
    """The build record of the ``users`` dataset, building it (timed, in a child) if this
    invocation has not yet; with ``plan.reuse`` an earlier invocation's record counts too.
    """
    record_path = plan.out_dir / "data" / "builds.json"
    records = json.loads(record_path.read_text()) if record_path.is_file() else {}
    rec = records.get(str(users))
    if rec and Path(bundle_dir(plan, users)).is_dir() and (plan.reuse or rec.get("invocation") == plan.invocation):
        return rec
    work = str(plan.out_dir / "data")
    rec = call_in_child("graphrec_dist.benchmarks.datasets:build_child", {"users": users, "work_dir": work},
                        plan.out_dir, timeout_s, tag=f"build-{users}")
    rec["invocation"] = plan.invocation
    rec["command"] = f"python -m graphrec_dist.benchmarks.data_build --users {users} --work {work}"
    records = json.loads(record_path.read_text()) if record_path.is_file() else {}
    records[str(users)] = rec
    write_json_atomic(record_path, records)
    return rec
