"""The inductive tables (docs/EVALUATION.md): cold items and new users, on real data (MovieLens
100K, when the folder is there) and on generated Goodbooks-shaped data, over several split seeds.

Every model trains with its own preset on bundles built with ``data.split.cold_items`` and
``data.split.cold_users``; the trainer writes the protocols' validation and test metrics to
``inductive_metrics.json``. graphsage also runs with ``model.id_dropout=0`` (the same model
without the unknown vector), so the warm cost of the change is measured side by side. On the
demo-sized generated data the section also times ``recommend --history`` after loading.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from graphrec_dist.benchmarks.common import BenchError
from graphrec_dist.benchmarks.datasets import ensure_bundle
from graphrec_dist.benchmarks.plan import BenchPlan, bundle_dir, data_overrides as synth_overrides
from graphrec_dist.benchmarks.quality import MAIN_PRESET, preset_for, run_name
from graphrec_dist.benchmarks.realdata import data_overrides as real_overrides, mean_std
from graphrec_dist.benchmarks.runs import train_run
from graphrec_dist.benchmarks.tuning import chosen_text, grid_text, tuned_overrides
from graphrec_dist.config import load_config
from graphrec_dist.data.store import load_bundle
from graphrec_dist.recommend import recommend_history
from graphrec_dist.run_dir import INDUCTIVE, new_model, read_json

# (row label, model, extra overrides); graphsage's own preset sets model.id_dropout.
MODELS = (("graphsage", "graphsage", []), ("graphsage, id_dropout=0", "graphsage", ["model.id_dropout=0"]),
          ("content_knn", "content_knn", []), ("ease_content", "ease_content", []), ("ease", "ease", []),
          ("popularity", "popularity", []),
          ("mf", "mf", []), ("lightgcn", "lightgcn", []))
SPLITS = ("val", "test", "cold_val", "cold_test", "cold_user_val", "cold_user_test")


def protocol_overrides(plan: BenchPlan) -> list[str]:
    return [f"data.split.cold_items={plan.cold_items}", f"data.split.cold_users={plan.cold_users}"]


def dataset_rows(plan: BenchPlan, label: str, data_for_seed) -> dict[str, Any]:
    """Every model of MODELS on one dataset over ``plan.inductive_seeds``: NDCG@10 per split, mean ± std."""
    rows: dict[str, Any] = {}
    for row, model, extra in MODELS:
        if model not in plan.inductive_models:
            continue
        preset, select = preset_for(model)
        per_seed, tunings = [], []

        def data(seed: int) -> list[str]:
            return data_for_seed(seed) + protocol_overrides(plan)

        try:
            for seed in plan.inductive_seeds:
                # chosen on this data's (warm) validation, as in the real-data tables
                chosen, tuning = tuned_overrides(plan, model, preset, select, data, seed, plan.inductive_seeds[0],
                                                 f"inductive-{label}")
                tunings.append(tuning)
                overrides = select + extra + chosen + data(seed) + list(plan.train_overrides)
                rec = train_run(plan.out_dir, run_name(f"inductive-{label}-{model}", seed, preset, overrides), preset,
                                overrides, timeout_s=4 * 3600, invocation=plan.invocation, reuse=plan.reuse)
                per_seed.append(_seed_values(rec))
        except BenchError as exc:  # one model failing must not cost the table the others
            rows[row] = {"error": str(exc)}
            continue
        rows[row] = {"preset": preset, "overrides": select + extra, "command": rec["command"],
                     "tuning": {**tunings[0], "chosen_text": chosen_text(tunings), "grid_text": grid_text(tunings[0])},
                     "summary": {s: mean_std([v[s] for v in per_seed if v.get(s) is not None]) for s in SPLITS},
                     "wall_s": mean_std([v["wall_s"] for v in per_seed]), "run_dir": rec["run_dir"]}
    return rows


def _seed_values(rec: dict[str, Any]) -> dict[str, Any]:
    run_dir = Path(rec["run_dir"])
    inductive = read_json(run_dir, INDUCTIVE)
    best_val = max((r["val_ndcg@10"] for r in rec["epochs"] if "val_ndcg@10" in r), default=None)
    out = {"val": best_val, "test": rec["test_metrics"].get("ndcg@10"), "wall_s": rec["wall_s"]}
    out.update({s: m["ndcg@10"] for s, m in inductive.items() if isinstance(m, dict)})
    return out


def time_history_recommend(plan: BenchPlan, users: int, repeats: int = 5) -> dict[str, Any]:
    """Seconds of ``recommend --history`` after loading: the demo's model config on the generated
    ``users`` dataset (median of ``repeats`` 10-item histories). The weights do not change the
    cost, so the model is freshly initialised rather than trained."""
    ensure_bundle(plan, users)
    cfg = load_config(MAIN_PRESET, synth_overrides(plan, users))
    bundle = load_bundle(bundle_dir(plan, users))
    model = new_model(cfg, bundle).eval()
    gen = torch.Generator().manual_seed(0)
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            books = torch.randperm(bundle.num_books, generator=gen)[:10].tolist()
            t0 = time.perf_counter()
            recommend_history(model, bundle, books, 10)
            times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "max_s": max(times), "repeats": repeats,
            "num_users": bundle.num_users, "num_books": bundle.num_books, "preset": MAIN_PRESET}


def run_section(plan: BenchPlan) -> dict[str, Any]:
    datasets: dict[str, Any] = {}
    raw = Path(plan.real_data_dir)
    if raw.is_dir():
        datasets["real"] = {"name": f"{raw.name} (real)",
                            "rows": dataset_rows(plan, "real", lambda seed: real_overrides(plan, seed))}
    else:
        datasets["real"] = {"skipped": f"real data not found: {raw} (pass --real-data DIR)"}
    users = plan.inductive_users

    def synth(seed: int) -> list[str]:
        base = synth_overrides(plan, users)
        bundle = plan.out_dir / "data" / f"bundle-{users}-cold-split{seed}"
        return [o for o in base if not o.startswith("data.bundle_dir=")] + [
            f"data.bundle_dir={bundle}", f"data.split.seed={seed}", "train.seed=0"]

    if plan.inductive_synth or "skipped" in datasets["real"]:
        datasets["synth"] = {"name": f"generated, {users} users", "rows": dataset_rows(plan, "synth", synth)}
    else:
        datasets["synth"] = {"skipped": f"generated data ({users} users) runs with --full, or when the real "
                                        "data is missing"}
    timing = time_history_recommend(plan, plan.history_timing_users)
    return {"datasets": datasets, "seeds": list(plan.inductive_seeds), "cold_items": plan.cold_items,
            "cold_users": plan.cold_users, "recommend_history": timing}
