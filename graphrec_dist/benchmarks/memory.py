"""Peak RSS and time of the three heavy stages (data build, training, evaluation) at one size,
and the scale sweep that repeats them at several sizes.

Each stage runs in its own child process:
- data build: generate + build the bundle (:func:`datasets.build_child`);
- training: ``graphrec_dist.train.profile_steps`` for a few steps (training alone, no evaluation);
- evaluation: load the bundle, build graphsage, embedding inference for every user and book,
  then full ranking of the test split (:func:`eval_child`).
"""
from __future__ import annotations

import time
from typing import Any

import torch

from graphrec_dist.benchmarks.common import GOODBOOKS_USERS, call_in_child, median
from graphrec_dist.benchmarks.datasets import ensure_bundle
from graphrec_dist.benchmarks.plan import SPEED_OVERRIDES, SPEED_PRESET, BenchPlan, run_overrides
from graphrec_dist.benchmarks.training import profile
from graphrec_dist.checkpoint import load_run
from graphrec_dist.config import load_config
from graphrec_dist.data.prepare import prepare_bundle
from graphrec_dist.distributed import DistContext
from graphrec_dist.evaluate import evaluate_scorer
from graphrec_dist.run_dir import new_model


def eval_child(run_dir: str | None = None, config_path: str | None = None, overrides: list[str] | None = None,
               repeats: int = 1) -> dict[str, Any]:
    """Embedding inference (``model.scorer``) and full ranking of the test split, for a trained run
    (``run_dir``) or a freshly initialised model of a config (the cost does not depend on the weights)."""
    if run_dir is not None:
        cfg, model, bundle = load_run(run_dir, [])
    else:
        cfg = load_config(config_path, overrides or [])
        bundle = prepare_bundle(cfg.data)
        model = new_model(cfg, bundle)
    ctx = DistContext()
    with torch.no_grad():
        model.scorer(bundle, ctx)  # warm-up: the first sparse products pay one-off set-up costs
    infer, rank, metrics = [], [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            scorer = model.scorer(bundle, ctx)
        t1 = time.perf_counter()
        metrics = evaluate_scorer(scorer, bundle, "test", cfg.eval, ctx)
        t2 = time.perf_counter()
        infer.append(t1 - t0)
        rank.append(t2 - t1)
    return {"inference_s": round(median(infer), 3), "ranking_s": round(median(rank), 3), "repeats": repeats,
            "ranked_users": metrics.get("num_users"), "num_users": bundle.num_users, "num_books": bundle.num_books}


def measure_point(plan: BenchPlan, users: int, steps: int) -> dict[str, Any]:
    """Build, train-profile and evaluate at ``users`` scale; seconds and peak RSS of each stage.

    Evaluation uses a freshly initialised graphsage of the same config: inference and ranking
    cost the same whatever the weights, and no training run is needed for the figure.
    """
    build = ensure_bundle(plan, users)
    prof = profile(plan, users, steps)
    overrides = run_overrides(plan, users, *SPEED_OVERRIDES, "train.seed=0")
    ev = call_in_child("graphrec_dist.benchmarks.memory:eval_child",
                       {"config_path": SPEED_PRESET, "overrides": overrides, "repeats": 1},
                       plan.out_dir, timeout_s=4 * 3600, tag=f"eval-{users}")
    return {
        "users": users, "num_books": build["num_books"], "train_edges": build["train_edges"],
        "graph_edges": build["graph_edges"],
        "data_build": {"synth_s": build["synth_s"], "build_s": build["build_s"], "load_s": build["load_s"],
                       "wall_s": build["child_wall_s"], "peak_rss_mb": build["peak_rss_mb"],
                       "command": build["command"]},
        "training": {"steps": steps, "seed_edges_per_s": prof.get("seed_edges_per_s"),
                     "peak_rss_mb": prof["child_peak_rss_mb"], "wall_s": prof["child_wall_s"]},
        "evaluation": {"inference_s": ev["inference_s"], "ranking_s": ev["ranking_s"],
                       "peak_rss_mb": ev["child_peak_rss_mb"], "wall_s": ev["child_wall_s"]},
    }


def run_memory(plan: BenchPlan) -> dict[str, Any]:
    """Peak RSS of data build, training and evaluation at ``plan.memory_users`` (Goodbooks scale)."""
    point = measure_point(plan, plan.memory_users, plan.sweep_steps)
    point["percent"] = round(100.0 * plan.memory_users / GOODBOOKS_USERS, 1)
    point["training_target_mb"] = 6 * 1024
    point["training_under_target"] = point["training"]["peak_rss_mb"] < 6 * 1024
    return point


def run_sweep(plan: BenchPlan) -> dict[str, Any]:
    """The same measurements at each size of ``plan.sweep_users``."""
    points = []
    for users in plan.sweep_users:
        point = measure_point(plan, users, plan.sweep_steps)
        point["percent"] = round(100.0 * users / GOODBOOKS_USERS, 1)
        points.append(point)
    return {"points": points}
