"""The real-data quality tables: every model, with its own preset, on real interaction data read
through the bring-your-own-CSV builder, over several split seeds: section ``realdata`` (MovieLens
100K by default) and section ``realbooks`` (real Goodbooks-10k ratings of 2,672 users with the real
books, tags and authors: Graph3 on the product's own kind of data).

Generated data cannot judge a model (a model can always be tuned to the generator), so this is the
table that does. One leave-one-out split of ~1,000 users carries a standard error of ~0.013 on
NDCG@10, so every model runs on ``plan.real_seeds`` splits (``data.split.seed``) and the table
reports mean ± standard deviation over them. Validation NDCG@10 (what presets were tuned on) and
test NDCG@10 (reported once per final model) are kept apart.
"""
from __future__ import annotations

import json
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphrec_dist.benchmarks.common import BenchError, carried_models, python_cmd, run_child
from graphrec_dist.benchmarks.plan import BenchPlan
from graphrec_dist.benchmarks.quality import preset_for, run_name, summarize_run
from graphrec_dist.benchmarks.runs import train_run
from graphrec_dist.benchmarks.tuning import chosen_text, grid_text, tuned_overrides

METRICS = ("hit@10", "ndcg@10", "ndcg@20", "mrr")
POPULARITY_GROUPS = 5  # test rows cut by their item's training count (graphrec-dist evaluate --by-popularity)


def popularity_breakdown(run_dir: str | Path, groups: int = POPULARITY_GROUPS) -> list[dict[str, Any]]:
    """Test metrics of a finished run per popularity group of the held-out items, from
    ``graphrec-dist evaluate --by-popularity`` in a child (cached beside the run)."""
    cache = Path(run_dir) / f"by_popularity_test_{groups}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    log = Path(run_dir) / "by_popularity.log"
    res = run_child(python_cmd("-m", "graphrec_dist", "evaluate", "--run", str(run_dir), "--split", "test",
                               "--by-popularity", str(groups)), 1800, log)
    if res.returncode != 0:
        raise BenchError(f"evaluate --by-popularity on {run_dir} failed (exit code {res.returncode}); see {log}.err")
    text = log.read_text()
    groups_out = json.loads(text[text.index("{"):])["by_popularity"]
    cache.write_text(json.dumps(groups_out))
    return groups_out


@dataclass(frozen=True)
class RealData:
    """One real dataset: the section that reports it, its folder and its CSV spec."""

    section: str
    data_dir: str
    spec: str


def real_datasets(plan: BenchPlan) -> dict[str, RealData]:
    """Section name -> the real dataset it runs on."""
    return {"realdata": RealData("realdata", plan.real_data_dir, plan.real_spec),
            "realbooks": RealData("realbooks", plan.real_books_dir, plan.real_books_spec)}


def data_overrides(plan: BenchPlan, seed: int, data: RealData | None = None) -> list[str]:
    """Config overrides that point a run at the real data (default: the realdata section's), split
    with ``seed``."""
    data = data or real_datasets(plan)["realdata"]
    bundle = plan.out_dir / "data" / f"real-{Path(data.data_dir).name}-split{seed}"
    return ["data.source=csv", f"data.csv_spec={data.spec}", f"data.raw_dir={data.data_dir}",
            f"data.bundle_dir={bundle}", f"data.split.seed={seed}", "train.seed=0"]


def mean_std(values: list[float]) -> dict[str, float | None]:
    """Mean and sample standard deviation (None for fewer than two values)."""
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def seed_run(plan: BenchPlan, model: str, data: RealData, seed: int) -> dict[str, Any]:
    """Train ``model`` on split ``seed`` of ``data``; its validation, test and popularity figures."""
    preset, extra = preset_for(model)
    prefix = "real" if data.section == "realdata" else data.section
    chosen, tuning = tuned_overrides(plan, model, preset, extra, lambda s: data_overrides(plan, s, data), seed,
                                     plan.real_seeds[0], prefix)
    overrides = extra + chosen + data_overrides(plan, seed, data) + list(plan.train_overrides)
    name = run_name(f"{prefix}-{model}", seed, preset, overrides)
    run = summarize_run(train_run(plan.out_dir, name, preset, overrides, timeout_s=4 * 3600,
                                  invocation=plan.invocation, reuse=plan.reuse))
    return {"val_ndcg@10": run["best_val_ndcg@10"], "test": run["test"], "tuning": tuning,
            "best_val_epoch": run["best_val_epoch"], "train_s": run["train_s"],
            "wall_s": run["wall_s"], "command": run["command"],
            "by_popularity": popularity_breakdown(run["run_dir"])}


def model_summary(model: str, seeds: dict[str, Any]) -> dict[str, Any]:
    """One model's per-seed results and their mean ± std."""
    preset, extra = preset_for(model)
    summary = {"val_ndcg@10": mean_std([s["val_ndcg@10"] for s in seeds.values() if s["val_ndcg@10"] is not None])}
    for m in METRICS:
        summary[f"test_{m}"] = mean_std([s["test"][m] for s in seeds.values() if s["test"].get(m) is not None])
    summary["wall_s"] = mean_std([s["wall_s"] for s in seeds.values()])
    # Group g's NDCG@10 over seeds (the groups' count ranges differ a little per split).
    per_group = [[s["by_popularity"][g]["ndcg@10"] for s in seeds.values() if len(s["by_popularity"]) > g]
                 for g in range(max(len(s["by_popularity"]) for s in seeds.values()))]
    summary["by_popularity_ndcg@10"] = [mean_std(v) for v in per_group]
    first = next(iter(seeds.values()))["by_popularity"]
    summary["by_popularity_train_count"] = [g["train_count"] for g in first]
    tunings = [s["tuning"] for s in seeds.values()]
    return {"preset": preset, "short_command": " ".join(["graphrec-dist train", preset, *extra, "…"]),
            "seeds": seeds, "summary": summary, "tuning": {**tunings[0], "chosen_text": chosen_text(tunings),
                                                           "grid_text": grid_text(tunings[0])}}


def model_runs(plan: BenchPlan, models: list[str], data: RealData) -> dict[str, Any]:
    """Every model of ``models`` on every split seed, ``plan.quality_jobs`` runs at once (each its
    own process; splits that share a bundle wait on its build lock); a model whose run fails gets
    an error row and costs the table none of the others."""
    tasks = [(m, seed) for m in models for seed in plan.real_seeds]

    def one(task: tuple[str, int]) -> dict[str, Any]:
        try:
            return seed_run(plan, task[0], data, task[1])
        except BenchError as exc:
            return {"error": str(exc)}

    with ThreadPoolExecutor(max_workers=max(1, plan.quality_jobs)) as pool:
        results = dict(zip(tasks, pool.map(one, tasks)))
    out: dict[str, Any] = {}
    for m in models:
        seeds = {str(seed): results[(m, seed)] for seed in plan.real_seeds}
        errors = [r["error"] for r in seeds.values() if "error" in r]
        out[m] = {"error": errors[0]} if errors else model_summary(m, seeds)
    return out


def run_section(plan: BenchPlan) -> dict[str, Any]:
    """Section ``realdata``: MovieLens 100K (or ``--real-data``)."""
    return run_real(plan, real_datasets(plan)["realdata"])


def run_books_section(plan: BenchPlan) -> dict[str, Any]:
    """Section ``realbooks``: real Goodbooks-10k ratings (``--real-books``)."""
    return run_real(plan, real_datasets(plan)["realbooks"])


def run_real(plan: BenchPlan, data: RealData) -> dict[str, Any]:
    """Every model of ``plan.quality_models`` on ``data``, ``plan.real_seeds`` splits each (with
    ``--models``, the other models' rows come from the section's earlier JSON on the same data)."""
    raw = Path(data.data_dir)
    option = "--real-data" if data.section == "realdata" else "--real-books"
    if not raw.is_dir():  # the default folder sits outside the project: no table, and say why
        return {"skipped": f"real data not found: {raw} (pass {option} DIR, a folder with the files "
                           f"{data.spec} names)", "data_dir": str(raw), "spec": data.spec}
    # The main model first, then the cheap baselines: an interrupted run still has the rows that matter.
    order = sorted(plan.quality_models, key=lambda m: (not m.startswith("graphsage"), m))
    models = model_runs(plan, order, data)
    common = data_overrides(plan, plan.real_seeds[0], data)
    same_data = {"common_overrides": common, "seeds": list(plan.real_seeds)}
    models.update(carried_models(plan, data.section, models, same_data))
    ranked = sorted((m for m in models if "summary" in models[m]
                     and models[m]["summary"]["test_ndcg@10"]["mean"] is not None),
                    key=lambda m: -models[m]["summary"]["test_ndcg@10"]["mean"])
    return {"data_dir": str(raw), "spec": data.spec, "seeds": list(plan.real_seeds), "models": models,
            "ranking": ranked, "common_overrides": common}
