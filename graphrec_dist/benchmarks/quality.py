"""The quality table: every model trained on the same generated data with the same seed through
``graphrec-dist train``, ranked by the full-ranking evaluator on the leave-one-out test split;
``graphsage`` also under the notebooks' sampled protocol.
"""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from graphrec_dist.benchmarks.common import BenchError, carried_models, read_section
from graphrec_dist.benchmarks.datasets import ensure_bundle
from graphrec_dist.benchmarks.plan import BenchPlan, run_overrides
from graphrec_dist.benchmarks.runs import evaluate_run, train_run
from graphrec_dist.benchmarks.tuning import chosen_text, grid_text, tuned_overrides
from graphrec_dist.config import RELATION_NAMES
from graphrec_dist.run_dir import CONFIG

MAIN_PRESET = "configs/demo.yaml"
METRIC_KEYS = ("hit@10", "hit@20", "hit@50", "ndcg@10", "ndcg@20", "ndcg@50", "mrr")


def preset_for(model: str, graphsage_preset: str | None = None) -> tuple[str, list[str]]:
    """The config preset a model trains with, and the overrides that select it (``graphsage_preset``
    in place of configs/demo.yaml for the models without a preset of their own)."""
    own = Path("configs/baselines") / f"{model}.yaml"
    if own.is_file():
        return str(own), []
    return graphsage_preset or MAIN_PRESET, [f"model.name={model}"]


def val_value(row: dict[str, Any], metric: str = "ndcg@10") -> float | None:
    """A validation metric from one metrics.jsonl row (None for an epoch without validation)."""
    return row.get(f"val_{metric}")


def epoch_seconds(row: dict[str, Any]) -> float | None:
    """Training seconds of one metrics.jsonl row: an epoch, or a closed-form model's fit."""
    seconds = row.get("epoch_time_s", row.get("fit_time_s"))
    return None if seconds is None else float(seconds)


def summarize_run(record: dict[str, Any]) -> dict[str, Any]:
    """Test metrics, best validation epoch, training time and curve of one run."""
    rows = record["epochs"]
    # The trainer counts epochs from 0; tables and charts count them from 1.
    curve = [{"epoch": r.get("epoch", i) + 1, "step": r.get("step"), "val_ndcg@10": val_value(r),
              "loss": r.get("loss"), "epoch_s": epoch_seconds(r)} for i, r in enumerate(rows)]
    scored = [c for c in curve if c["val_ndcg@10"] is not None]
    best = max(scored, key=lambda c: c["val_ndcg@10"]) if scored else None
    times = [c["epoch_s"] for c in curve if c["epoch_s"] is not None]
    lrs = [r["lr"] for r in rows if isinstance(r.get("lr"), (int, float))]
    test = record.get("test_metrics", {})
    best_epoch = test["best_epoch"] + 1 if isinstance(test.get("best_epoch"), int) else (best and best["epoch"])
    return {
        "closed_form": any("fit_time_s" in r for r in rows),
        "command": record["command"], "run_dir": record["run_dir"], "config": str(Path(record["run_dir"]) / CONFIG),
        "test": {k: test.get(k) for k in METRIC_KEYS if k in test},
        "best_val_epoch": best_epoch, "epochs_run": len(rows),
        "best_val_ndcg@10": best["val_ndcg@10"] if best else None,
        "train_s": round(sum(times), 2) if times else None, "wall_s": record["wall_s"],
        "peak_rss_mb": record["peak_rss_mb"], "reused": record["reused"], "curve": curve,
        # A learning rate decayed to ~0 (cosine) ends training by design: a best last epoch is no
        # sign that more epochs were needed.
        "lr_decayed": bool(lrs) and lrs[0] > 0 and lrs[-1] < 0.01 * lrs[0],
    }


def common_overrides(plan: BenchPlan, users: int) -> list[str]:
    """Same data, same seed (and the plan's epoch cap, if any) for every model."""
    return run_overrides(plan, users, "train.seed=0", *plan.quality_overrides)


def run_name(label: str, users: int, preset: str, overrides: list[str]) -> str:
    """``{label}-{users}-{digest of the config}``: sections that train the same config share the
    run, and a run with other settings never overwrites a folder that some section's JSON names.
    The digest covers the preset file's text too, so an edited preset gets a folder of its own."""
    text = Path(preset).read_text() if Path(preset).is_file() else ""
    digest = hashlib.sha1(json.dumps([preset, text, list(overrides)]).encode()).hexdigest()[:8]
    return f"{label}-{users}-{digest}"


def model_run(plan: BenchPlan, model: str, users: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train (or reuse, within this invocation) ``model`` on the ``users`` dataset, with the values
    its preset's grid chose on this dataset's validation; the run and the tuning record."""
    ensure_bundle(plan, users)
    preset, extra = preset_for(model, plan.quality_graphsage_preset)
    budget = plan.quality_model_overrides.get(model, [])
    chosen, tuning = tuned_overrides(plan, model, preset, extra, lambda _: common_overrides(plan, users) + budget,
                                     0, 0, f"quality-{users}")
    overrides = extra + chosen + common_overrides(plan, users) + budget
    run = train_run(plan.out_dir, run_name(model, users, preset, overrides), preset, overrides,
                    timeout_s=4 * 3600, invocation=plan.invocation, reuse=plan.reuse)
    return run, tuning


def run_section(plan: BenchPlan) -> dict[str, Any]:
    """Train every model of ``plan.quality_models``; sampled-protocol evaluation of graphsage."""
    data = ensure_bundle(plan, plan.quality_users)
    common = common_overrides(plan, plan.quality_users)

    def one(m: str) -> dict[str, Any]:
        preset, extra = preset_for(m, plan.quality_graphsage_preset)
        try:
            run, tuning = model_run(plan, m, plan.quality_users)
            row = {**summarize_run(run), "tuning": {**tuning, "chosen_text": chosen_text([tuning]),
                                                    "grid_text": grid_text(tuning)}}
        except BenchError as exc:  # one model failing must not cost the table the others
            row = {"error": str(exc), "test": {}, "curve": [], "command": f"graphrec-dist train {preset}"}
        row["short_command"] = " ".join(["graphrec-dist train", preset, *extra, "…"])
        return row

    # Several at once (--full): each run is its own process, timed by its own clock.
    with ThreadPoolExecutor(max_workers=max(1, plan.quality_jobs)) as pool:
        models = dict(zip(plan.quality_models, pool.map(one, plan.quality_models)))
    models.update(carried_models(plan, "quality", models, {"common_overrides": common}))
    out: dict[str, Any] = {"num_users": data["num_users"], "num_books": data["num_books"],
                           "train_edges": data["train_edges"], "models": models, "common_overrides": common}
    carried_sampled = ((read_section(plan.out_dir, "quality") or {}).get("results", {}).get("graphsage_sampled")
                       if "graphsage" not in plan.quality_models and "graphsage" in models else None)
    if carried_sampled:  # graphsage was carried over: so are its sampled-protocol figures
        out["graphsage_sampled"] = carried_sampled
    elif models.get("graphsage", {}).get("test"):
        cands = [c for c in plan.sampled_candidates if c < data["num_books"]]
        sampled = evaluate_run(plan.out_dir, models["graphsage"]["run_dir"],
                               ["eval.protocol=sampled", f"eval.sampled_candidates=[{','.join(map(str, cands))}]"],
                               timeout_s=3600, tag=f"graphsage-sampled-{plan.quality_users}")
        out["graphsage_sampled"] = {"candidates": cands, **sampled}
    out["ranking"] = rank_models(models)
    out["ablation"] = run_ablation(plan, common, models.get("graphsage", {}).get("test", {}).get("ndcg@10"))
    return out


def rank_models(models: dict[str, dict[str, Any]], metric: str = "ndcg@10") -> list[str]:
    """Model names by test ``metric``, best first."""
    have = [m for m in models if models[m]["test"].get(metric) is not None]
    return sorted(have, key=lambda m: -models[m]["test"][metric])


def run_ablation(plan: BenchPlan, common: list[str], base: float | None) -> dict[str, Any]:
    """graphsage with one Graph3 side relation removed at a time, same preset and budget.

    Each row is compared with ``base``, the test NDCG@10 of the table's full graphsage (same data,
    seed and epochs), so ``delta_ndcg@10`` < 0 means the relation helps.
    """
    if not plan.ablation:
        return {"run": False, "why": "it runs with --ablation"}
    preset, extra = preset_for("graphsage", plan.quality_graphsage_preset)
    extra = extra + plan.quality_model_overrides.get("graphsage", [])
    results: dict[str, Any] = {}
    for rel in RELATION_NAMES:
        overrides = extra + common + [f"model.exclude_relations=[{rel}]"]
        name = run_name(f"graphsage-no_{rel}", plan.quality_users, preset, overrides)
        try:
            run = summarize_run(train_run(plan.out_dir, name, preset, overrides, timeout_s=4 * 3600,
                                          invocation=plan.invocation, reuse=plan.reuse))
        except BenchError as exc:
            results[rel] = {"error": str(exc)}
            continue
        ndcg = run["test"].get("ndcg@10")
        results[rel] = {**run["test"], "delta_ndcg@10": None if ndcg is None or base is None else ndcg - base,
                        "best_val_epoch": run["best_val_epoch"], "train_s": run["train_s"],
                        "wall_s": run["wall_s"], "reused": run["reused"],
                        "command": " ".join(["graphrec-dist train", preset, *extra, "…",
                                             f"model.exclude_relations=[{rel}]"])}
    return {"run": True, "baseline_ndcg@10": base, "results": results}
