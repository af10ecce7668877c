"""The generated datasets the benchmarks run on, built once per size and invocation in a child
process, so that the build's time and peak RSS are measured where the bundle is made.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from graphrec_dist.benchmarks.common import call_in_child
from graphrec_dist.benchmarks.plan import BenchPlan, bundle_dir, data_overrides
from graphrec_dist.io_utils import write_json_atomic


def build_child(overrides: list[str], force: bool = True) -> dict[str, Any]:
    """Generate the raw files (if missing) and build the bundle; seconds of each step, counts."""
    from graphrec_dist.config import load_config
    from graphrec_dist.data.prepare import build_bundle, ensure_synth
    from graphrec_dist.data.store import load_bundle

    cfg = load_config(None, overrides).data
    t0 = time.perf_counter()
    ensure_synth(cfg)
    t1 = time.perf_counter()
    path, built = build_bundle(cfg, force=force)
    t2 = time.perf_counter()
    bundle = load_bundle(path)
    t3 = time.perf_counter()
    return {
        "synth_s": round(t1 - t0, 3), "build_s": round(t2 - t1, 3), "load_s": round(t3 - t2, 3), "built": built,
        "num_users": bundle.num_users, "num_books": bundle.num_books, "train_edges": int(bundle.train.shape[0]),
        "graph_edges": int(sum(s.edge_index.shape[1] for s in bundle.graph.edge_stores)),
        "bundle_dir": str(path),
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
    rec = call_in_child("graphrec_dist.benchmarks.datasets:build_child", {"overrides": data_overrides(plan, users)},
                        plan.out_dir, timeout_s, tag=f"build-{users}")
    rec["invocation"] = plan.invocation
    rec["command"] = f"graphrec-dist data synth/build with {' '.join(data_overrides(plan, users))}"
    records = json.loads(record_path.read_text()) if record_path.is_file() else {}
    records[str(users)] = rec
    write_json_atomic(record_path, records)
    return rec
