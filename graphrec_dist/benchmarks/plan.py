"""What a bench run measures and at which sizes: the reduced plan (``make bench``, ~50 minutes on
2 cores, per section in docs/BENCHMARKS.md) and the full plan (``graphrec-dist bench --full``, hours).

Every size is a number of generated users; 53,424 (Goodbooks-10k) is 100%.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from graphrec_dist.benchmarks.common import GOODBOOKS_USERS

QUALITY_MODELS = ("popularity", "mf", "ease", "rp3beta", "ease_content", "lightgcn_ui", "lightgcn", "graphsage_ui",
                  "graphsage")
# Speed and memory figures use the full-scale training config (fanout [15, 10], batch 2048) with one
# intra-op thread per process (2 threads on a busy 2-core box are several times slower).
SPEED_PRESET = "configs/default.yaml"
SPEED_OVERRIDES = ("model.name=graphsage", "train.num_threads=1")


@dataclass
class BenchPlan:
    """Sizes, step counts and repeats of every section."""

    mode: str
    out_dir: Path = Path("bench_out")
    repeats: int = 3
    reuse: bool = False  # reuse runs and bundles of an earlier invocation with the same key
    invocation: str = ""  # runs, datasets and profiles are shared within one invocation (or any, with reuse)
    train_overrides: list[str] = field(default_factory=list)  # appended to every training config (--set)
    # sampling
    sampling_users: int = GOODBOOKS_USERS
    sampling_workers: list[int] = field(default_factory=lambda: [0, 1, 2])
    sampling_batches: int = 5
    # training: per-phase profile, and the reference notebook's loop vs the trainer
    profile_users: int = GOODBOOKS_USERS
    profile_steps: int = 10
    compare_users: int = 2000
    compare_budget_s: float = 60.0  # the reference loop's training time cap (never above the trainer's)
    compare_eval_every: int = 5  # reference-loop steps between validations
    # evaluation
    eval_users: int = GOODBOOKS_USERS
    eval_books: int = 10_000
    eval_chunk_sweep: list[int] = field(default_factory=list)  # extra user_chunk sizes for the memory curve
    # scaling: 1 vs 2 gloo processes
    scaling_users: int = 2000
    scaling_steps: int = 10
    # sharding: replicated vs dist.sharding=users on these world sizes (gloo processes)
    sharding_users: int = 5342
    sharding_ranks: list[int] = field(default_factory=lambda: [1, 2])
    sharding_steps: int = 4
    # memory and the scale sweep (the memory point joins the sweep's chart)
    memory_users: int = GOODBOOKS_USERS
    sweep_users: list[int] = field(default_factory=lambda: [2000, 5342])
    sweep_steps: int = 10  # training steps profiled at each size
    # quality table
    quality_users: int = 2000
    quality_models: list[str] = field(default_factory=lambda: list(QUALITY_MODELS))
    # --models: train only quality_models and carry the other models' rows over from the section's
    # earlier JSON (quality, realdata), so one changed preset does not retrain the whole table.
    carry_over: bool = False
    # Same for every model: 5 epochs, validated each epoch; --full keeps each preset's.
    quality_overrides: list[str] = field(default_factory=lambda: ["train.epochs=5", "eval.every=1"])
    # Per model, overrides after the common ones (--full: each "epoch" a quarter pass, so that a
    # model is validated several times within the budget).
    quality_model_overrides: dict[str, list[str]] = field(default_factory=dict)
    # The preset of the graphsage models (None: configs/demo.yaml's; --full: configs/default.yaml,
    # the Goodbooks-scale recipe).
    quality_graphsage_preset: str | None = None
    quality_jobs: int = 1  # models trained at once (each one process)
    sampled_candidates: list[int] = field(default_factory=lambda: [1000, 2000])
    ablation: bool = False  # graphsage without one relation type at a time (--ablation)
    # real-data table: every model on real interactions (bring-your-own-CSV), several split seeds
    real_data_dir: str = "../shared/data/movielens-100k"
    real_spec: str = "configs/data/movielens-100k.yaml"
    real_seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    # realbooks: real Goodbooks-10k ratings (2,672 users) with the real books, tags and authors
    real_books_dir: str = "../shared/data/goodbooks-10k"
    real_books_spec: str = "configs/data/goodbooks-ratings.yaml"
    # inductive tables: the cold-item and new-user protocols on the real data and generated data.
    # Reduced: the real data over 2 split seeds (~7 minutes); the generated data only when the real
    # data is missing. --full: both datasets over 5 seeds (~57 minutes on 2 cores).
    inductive_seeds: list[int] = field(default_factory=lambda: [0, 1])
    inductive_synth: bool = False  # the generated dataset as well when the real data is there
    inductive_users: int = 1000
    inductive_models: list[str] = field(default_factory=lambda: ["graphsage", "content_knn", "ease_content", "ease",
                                                                 "popularity"])
    cold_items: float = 0.1
    cold_users: float = 0.1
    history_timing_users: int = 2000  # recommend --history is timed on the demo's size
    # sampled-training race: the trainer against the plain PyG pipeline (same bundle, one process)
    sampled_speed_users: int = GOODBOOKS_USERS
    sampled_speed_steps: int = 10
    sampled_speed_rounds: int = 3
    sampled_speed_workers: list[int] = field(default_factory=lambda: [0, 1, 2])
    # export and serve: a graphsage run at this scale; serve is load-tested with each client count
    serving_users: int = GOODBOOKS_USERS
    serving_clients: list[int] = field(default_factory=lambda: [1, 8])
    serving_seconds: float = 10.0
    # the synthetic table of the index measurements (--full: 1,000,000, whose usearch graph alone
    # takes ~460 s to build on 2 cores)
    serving_synthetic_items: int = 100_000

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["out_dir"] = str(self.out_dir)
        return out


def reduced_plan(out_dir: Path) -> BenchPlan:
    """``make bench``: small sizes where a figure does not need full scale."""
    return BenchPlan(mode="reduced", out_dir=out_dir)


# --full quality table: every trained model gets the same budget of training seconds (validation
# excluded); 53,424 generated users have ~4.86M training edges, so a quarter pass is ~1.21M.
FULL_BUDGET_S = 1200
FULL_QUARTER_PASS = 1_214_552


def full_plan(out_dir: Path) -> BenchPlan:
    """``graphrec-dist bench --full``: the issue's sizes (hours on 2 cores)."""
    quarter = [f"train.edges_per_epoch={FULL_QUARTER_PASS}"]
    # graphsage: configs/default.yaml's 3 passes with its cosine schedule, validated every quarter.
    graphsage = quarter + ["train.epochs=12"]
    # LightGCN propagates over the whole graph every step: at its preset's batch of 2,048, one
    # quarter pass had not ended after 30 minutes here, so at this scale it takes configs/
    # default.yaml's batch and learning rate (4x the batch, 2x the rate), as graphsage does.
    lightgcn = quarter + ["train.batch_size=8192", "train.lr=0.01"]
    return BenchPlan(
        mode="full", out_dir=out_dir, repeats=5, eval_chunk_sweep=[256, 4096],
        quality_overrides=[f"train.time_budget_s={FULL_BUDGET_S}"],
        quality_model_overrides={"mf": quarter, "lightgcn": lightgcn, "lightgcn_ui": lightgcn,
                                 "graphsage": graphsage, "graphsage_ui": graphsage},
        quality_graphsage_preset="configs/default.yaml", quality_jobs=2,
        sampling_workers=[0, 1, 2, 4], sampling_batches=50,
        profile_steps=200, compare_users=GOODBOOKS_USERS, compare_budget_s=1800.0, compare_eval_every=27,
        scaling_users=GOODBOOKS_USERS, scaling_steps=100, sharding_users=10 * GOODBOOKS_USERS,
        sharding_ranks=[1, 2, 4], sweep_users=[users_at(p) for p in (10, 30, 100, 300)],
        sweep_steps=200, quality_users=GOODBOOKS_USERS, inductive_users=2000,
        inductive_seeds=[0, 1, 2, 3, 4], inductive_synth=True, serving_synthetic_items=1_000_000,
        sampled_speed_steps=30,
        inductive_models=["graphsage", "content_knn", "ease_content", "ease", "popularity", "mf", "lightgcn"],
    )


def users_at(percent: float) -> int:
    return max(100, round(GOODBOOKS_USERS * percent / 100.0))


def data_overrides(plan: BenchPlan, users: int) -> list[str]:
    """Config overrides that point a run at the generated dataset of ``users`` users."""
    base = plan.out_dir / "data"  # the layout of graphrec_dist.benchmarks.data_build.bench_build
    return [
        "data.source=synth", f"data.synth_users={users}", "data.synth_seed=0",
        f"data.raw_dir={base / f'raw-{users}'}", f"data.bundle_dir={base / f'bundle-{users}'}",
    ]


def run_overrides(plan: BenchPlan, users: int, *extra: str) -> list[str]:
    """Data overrides, then ``extra``, then the plan's own ``--set`` overrides (which win)."""
    return data_overrides(plan, users) + list(extra) + list(plan.train_overrides)


def bundle_dir(plan: BenchPlan, users: int) -> str:
    return str(plan.out_dir / "data" / f"bundle-{users}")
