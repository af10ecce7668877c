"""The ``evaluation`` section: the evaluator against a bare chunked matmul + top-k on the same
random embeddings (the evaluator team's :func:`graphrec_dist.benchmarks.evaluation.bench_evaluation`),
and embedding inference + ranking time of a trained graphsage run.
"""
from __future__ import annotations

from typing import Any

from graphrec_dist.benchmarks.common import call_in_child
from graphrec_dist.benchmarks.plan import BenchPlan
from graphrec_dist.benchmarks.quality import model_run

TARGET_RATIO = 1.5


def run_section(plan: BenchPlan) -> dict[str, Any]:
    args = {"num_users": plan.eval_users, "num_books": plan.eval_books, "dim": 64, "repeats": plan.repeats,
            "chunk_sweep": list(plan.eval_chunk_sweep)}
    versus = call_in_child("graphrec_dist.benchmarks.evaluation:bench_evaluation", args, plan.out_dir,
                           timeout_s=3 * 3600, tag=f"bench-evaluation-{plan.eval_users}")
    versus["args"] = args
    versus["target_ratio"] = TARGET_RATIO
    run = model_run(plan, "graphsage", plan.quality_users)
    infer = call_in_child("graphrec_dist.benchmarks.memory:eval_child", {"run_dir": run["run_dir"], "repeats": plan.repeats},
                          plan.out_dir, timeout_s=3 * 3600, tag=f"inference-{plan.quality_users}")
    infer["run"] = run["command"]
    return {"versus_bare": versus, "graphsage_inference": infer}
