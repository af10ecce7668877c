"""Training speed: the trainer's per-phase profile (sampling / forward / backward / optimizer) and
the race between the trainer and the reference notebook's loop to a validation NDCG@10.
"""
from __future__ import annotations

import json
import math
from typing import Any

from graphrec_dist.benchmarks.common import BenchError, call_in_child
from graphrec_dist.benchmarks.datasets import ensure_bundle
from graphrec_dist.benchmarks.plan import SPEED_OVERRIDES, SPEED_PRESET, BenchPlan, run_overrides
from graphrec_dist.benchmarks.quality import common_overrides, epoch_seconds, model_run, preset_for, val_value
from graphrec_dist.config import load_config
from graphrec_dist.io_utils import write_json_atomic
from graphrec_dist.train import profile_steps

PHASES = ("sampling", "forward", "backward", "optimizer")


def profile_child(config_path: str, overrides: list[str], steps: int) -> dict[str, Any]:
    """``graphrec_dist.train.profile_steps`` on the configured data, in this (child) process."""
    cfg = load_config(config_path, overrides)
    return dict(profile_steps(cfg, steps))


def profile(plan: BenchPlan, users: int, steps: int) -> dict[str, Any]:
    """Per-phase seconds and seed edges/s of ``steps`` graphsage steps at ``users`` scale (one
    child process; shared by the sections of one invocation)."""
    key = f"{users}-{steps}"
    cache_path = plan.out_dir / "profiles.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    if key in cache and (plan.reuse or cache[key].get("invocation") == plan.invocation):
        return cache[key]
    ensure_bundle(plan, users)
    overrides = run_overrides(plan, users, *SPEED_OVERRIDES, "run.progress=false")
    res = call_in_child("graphrec_dist.benchmarks.training:profile_child",
                        {"config_path": SPEED_PRESET, "overrides": overrides, "steps": steps},
                        plan.out_dir, timeout_s=3 * 3600, tag=f"profile-{key}")
    res.update(users=users, invocation=plan.invocation,
               command=f"graphrec_dist.train.profile_steps(load_config({SPEED_PRESET!r}, {overrides!r}), "
                       f"steps={steps})")
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    cache[key] = res
    write_json_atomic(cache_path, cache)
    return res


def trained(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points after at least one step (the untrained model's score reaches nothing)."""
    return [p for p in points if (p.get("step") or 0) > 0 and p.get("val_ndcg@10") is not None]


def first_reach(points: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first trained point of a curve whose val_ndcg@10 is at least ``target``."""
    for p in trained(points):
        if p["val_ndcg@10"] >= target:
            return p
    return None


def trainer_curve(record: dict[str, Any], steps_per_epoch: int) -> list[dict[str, Any]]:
    """(step, cumulative training seconds, val NDCG@10) after each epoch of a trainer run."""
    out, elapsed = [], 0.0
    for i, row in enumerate(record["epochs"]):
        elapsed += epoch_seconds(row) or 0.0
        epoch = row.get("epoch", i) + 1  # the trainer counts from 0
        steps = row.get("step") or epoch * steps_per_epoch
        out.append({"epoch": epoch, "step": steps, "train_s": round(elapsed, 3), "val_ndcg@10": val_value(row)})
    return out


def race(ref: list[dict[str, Any]], ours: list[dict[str, Any]]) -> dict[str, Any]:
    """Who reaches 90% of the lower of the two best validation NDCG@10s first, in time and steps."""
    best_ref = max((p["val_ndcg@10"] for p in trained(ref)), default=0.0)
    best_ours = max((p["val_ndcg@10"] for p in trained(ours)), default=0.0)
    target = 0.9 * min(best_ref, best_ours)
    r, o = first_reach(ref, target), first_reach(ours, target)
    return {
        "target_val_ndcg@10": round(target, 5), "best_reference": best_ref, "best_trainer": best_ours,
        "reference": r and {"train_s": r["train_s"], "step": r["step"]},
        "trainer": o and {"train_s": o["train_s"], "step": o["step"]},
        "time_ratio_reference_over_trainer":
            round(r["train_s"] / o["train_s"], 3) if r and o and o["train_s"] > 0 else None,
    }


def compare(plan: BenchPlan) -> dict[str, Any]:
    """Trainer (graphsage on Graph3) vs the notebook's loop (user–book graph) on the same data."""
    users = plan.compare_users
    data = ensure_bundle(plan, users)
    ours, _ = model_run(plan, "graphsage", users)
    preset, extra = preset_for("graphsage")
    overrides = extra + common_overrides(plan, users)
    batch = load_config(preset, overrides).train.batch_size
    ours_curve = trainer_curve(ours, math.ceil(data["train_edges"] / batch))
    # The reference loop gets as much training time as the trainer used, up to the plan's cap.
    budget = min(plan.compare_budget_s, ours_curve[-1]["train_s"]) if ours_curve else plan.compare_budget_s
    ref = call_in_child("graphrec_dist.benchmarks.reference_loop:run_reference",
                        {"config_path": preset, "overrides": overrides, "time_budget_s": budget,
                         "max_steps": 10 ** 9, "eval_every_steps": plan.compare_eval_every},
                        plan.out_dir, timeout_s=budget * 4 + 600, tag=f"reference-loop-{users}")
    return {"users": users, "budget_s": budget, "trainer": {"command": ours["command"], "curve": ours_curve},
            "reference": ref, "race": race(ref["curve"], ours_curve)}


def run_section(plan: BenchPlan) -> dict[str, Any]:
    try:
        prof = profile(plan, plan.profile_users, plan.profile_steps)
    except BenchError as exc:  # keep the race even if the profile failed (and say so)
        prof = {"error": str(exc), "users": plan.profile_users}
    return {"profile": prof, "compare": compare(plan)}
