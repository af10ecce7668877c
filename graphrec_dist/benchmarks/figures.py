"""PNG charts of the benchmark JSON (matplotlib, Agg backend, written atomically).

Each function takes one section's ``results`` and a target path, draws one figure and returns the
path, or None when the results hold nothing to draw.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, NullFormatter, ScalarFormatter

from graphrec_dist.io_utils import atomic_path


def _subplots(*grid: int, figsize: tuple[float, float]):
    """A figure of its own (no pyplot: no global state, no display backend) and its axes."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid)


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def quality_bars(res: dict[str, Any], path: Path) -> Path | None:
    """Test Hit@10 and NDCG@10 of every model, side by side."""
    models = res.get("models", {})
    names = [m for m in models if models[m]["test"].get("ndcg@10") is not None]
    if not names:
        return None
    fig, ax = _subplots(figsize=(8, 4))
    width = 0.38
    xs = range(len(names))
    for i, metric in enumerate(("hit@10", "ndcg@10")):
        vals = [models[m]["test"].get(metric) or 0.0 for m in names]
        bars = ax.bar([x + (i - 0.5) * width for x in xs], vals, width, label=f"test {metric}")
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(list(xs), names, rotation=20)
    ax.set_ylabel("full-ranking leave-one-out")
    ax.set_title(f"Quality on {res.get('num_users')} generated users ({res.get('num_books')} books)")
    top = max((models[m]["test"].get("hit@10") or 0.0 for m in names), default=0.0)
    if top > 0:
        ax.set_ylim(0, top * 1.25)  # headroom so the legend never covers a bar's label
    ax.legend(loc="upper center", ncol=2)
    return _save(fig, path)


def training_curves(res: dict[str, Any], path: Path) -> Path | None:
    """Validation NDCG@10 per epoch of every model (closed-form models: one point)."""
    models = res.get("models", {})
    fig, ax = _subplots(figsize=(8, 4.5))
    drawn = 0
    for name, m in models.items():
        pts = [(c["epoch"], c["val_ndcg@10"]) for c in m.get("curve", []) if c.get("val_ndcg@10") is not None]
        if m.get("closed_form") and len(pts) == 1:  # fitted once: a level to compare against
            ax.axhline(pts[0][1], linestyle="--", linewidth=1, label=f"{name} (fitted once)", color=f"C{drawn}")
            drawn += 1
        elif pts:
            ax.plot(*zip(*pts), marker="o", markersize=4, label=name, color=f"C{drawn}")
            drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title("Training curves (full-ranking validation)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def time_to_quality(res: dict[str, Any], path: Path) -> Path | None:
    """Validation NDCG@10 against cumulative training seconds, every model on one plot (a
    closed-form model is one point at its fit time)."""
    models = res.get("models", {})
    fig, ax = _subplots(figsize=(8, 4.5))
    drawn, xs = 0, []
    for name, m in models.items():
        elapsed, pts = 0.0, []
        for c in m.get("curve", []):
            elapsed += c.get("epoch_s") or 0.0
            if c.get("val_ndcg@10") is not None:
                pts.append((elapsed, c["val_ndcg@10"]))
        if pts:
            ax.plot(*zip(*pts), marker="o", markersize=3 if len(pts) > 1 else 7, label=name, color=f"C{drawn}")
            drawn += 1
            xs += [x for x, _ in pts if x > 0]
    if not drawn:
        return None
    if xs and max(xs) > 20 * min(xs):  # seconds-long fits next to hour-long training
        ax.set_xscale("log")
    ax.set_xlabel("training seconds (cumulative; validation time not included)")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title("Time to quality (full-ranking validation)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def race(res: dict[str, Any], path: Path) -> Path | None:
    """Validation NDCG@10 against training seconds: the trainer vs the reference notebook loop."""
    comp = res.get("compare")
    if not comp:
        return None
    fig, ax = _subplots(figsize=(8, 4.5))
    ours = [(p["train_s"], p["val_ndcg@10"]) for p in comp["trainer"]["curve"] if p.get("val_ndcg@10") is not None]
    ref = [(p["train_s"], p["val_ndcg@10"]) for p in comp["reference"]["curve"] if p.get("val_ndcg@10") is not None]
    raw = [(p["train_s"], p["val_ndcg@10_raw_table"]) for p in comp["reference"]["curve"]
           if p.get("val_ndcg@10_raw_table") is not None]
    if ours:
        ax.plot(*zip(*ours), marker="o", label="trainer: graphsage on Graph3 (triplet LinkNeighborLoader)")
    if ref:
        ax.plot(*zip(*ref), marker=".", label="reference loop: GNN output")
    if raw:
        ax.plot(*zip(*raw), linestyle=":", label="reference loop: raw table (the notebook's evaluation)")
    target = comp.get("race", {}).get("target_val_ndcg@10")
    if target:
        ax.axhline(target, color="grey", linestyle="--", linewidth=0.8, label=f"target {target:.4f}")
    ax.set_xlabel("training seconds (validation excluded)")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title(f"Time to quality, {comp.get('users')} users")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def phase_split(res: dict[str, Any], phases: dict[str, float], path: Path) -> Path | None:
    """One horizontal stacked bar: seconds per step in each training phase."""
    if not phases:
        return None
    fig, ax = _subplots(figsize=(8, 2.2))
    left = 0.0
    for name, sec in phases.items():
        ax.barh([0], [sec], left=left, label=f"{name} {sec * 1000:.0f} ms")
        left += sec
    ax.set_yticks([])
    ax.set_xlabel("seconds per training step")
    ax.set_title(f"Where a graphsage step goes ({res.get('users')} users)")
    ax.legend(fontsize=8, ncol=len(phases), loc="upper center", bbox_to_anchor=(0.5, -0.45))
    return _save(fig, path)


def sampling_bars(res: dict[str, Any], path: Path) -> Path | None:
    """Seed edges/s per (backend, num_workers)."""
    rows = [r for r in res.get("rows", []) if r.get("installed") and r.get("seed_edges_per_s")]
    if not rows:
        return None
    fig, ax = _subplots(figsize=(7, 3.5))
    labels = [f"{r['backend']}\nworkers={r['num_workers']}" for r in rows]
    bars = ax.bar(labels, [r["seed_edges_per_s"] for r in rows], color="tab:green")
    ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_ylabel("seed edges / s")
    ax.set_title(f"Triplet LinkNeighborLoader on Graph3, {res.get('num_users')} users")
    return _save(fig, path)


def scaling_bars(res: dict[str, Any], path: Path) -> Path | None:
    rows = [r for r in res.get("rows", []) if r.get("seed_edges_per_s")]
    if not rows:
        return None
    fig, ax = _subplots(figsize=(5, 3.5))
    bars = ax.bar([f"{r['processes']} process" + ("es" if r["processes"] > 1 else "") for r in rows],
                  [r["seed_edges_per_s"] for r in rows], color="tab:purple")
    ax.bar_label(bars, labels=[f"{r['seed_edges_per_s']:.0f} (x{r.get('speedup') or 0:.2f})" for r in rows], fontsize=8)
    ax.set_ylabel("global seed edges / s")
    ax.set_title(f"DDP on CPU (gloo), {res.get('users')} users")
    return _save(fig, path)


def sweep_lines(res: dict[str, Any], path: Path) -> Path | None:
    """Seconds and peak RSS of each stage against the number of users (log-log)."""
    pts = res.get("points", [])
    if not pts:
        return None
    fig, (ax1, ax2) = _subplots(1, 2, figsize=(11, 4))
    fig.subplots_adjust(wspace=0.3)
    users = [p["users"] for p in pts]
    series = {
        "data build (s)": [p["data_build"]["synth_s"] + p["data_build"]["build_s"] for p in pts],
        "embedding inference (s)": [p["evaluation"]["inference_s"] for p in pts],
        "full ranking, test (s)": [p["evaluation"]["ranking_s"] for p in pts],
        "1k training seed edges (s)": [1000.0 / p["training"]["seed_edges_per_s"]
                                       if p["training"].get("seed_edges_per_s") else float("nan") for p in pts],
    }
    for name, vals in series.items():
        ax1.plot(users, vals, marker="o", label=name)
    for stage in ("data_build", "training", "evaluation"):
        ax2.plot(users, [p[stage]["peak_rss_mb"] / 1024 for p in pts], marker="o", label=stage.replace("_", " "))
    for ax, ylabel in ((ax1, "seconds"), (ax2, "peak RSS (GiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(users, [f"{u:,}" for u in users])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("users")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    ax2.yaxis.set_minor_formatter(FormatStrFormatter("%.1f"))  # memory spans under a decade: label minor ticks
    ax1.set_title("Time against scale")
    ax2.set_title("Memory against scale")
    return _save(fig, path)


def evaluation_bars(res: dict[str, Any], ratio_parts: tuple[Any, Any, Any], path: Path) -> Path | None:
    """Full-ranking seconds: the evaluator next to a bare chunked matmul + top-k."""
    ev, bare, ratio = ratio_parts
    if not ev or not bare:
        return None
    args = res.get("versus_bare", {}).get("args", {})
    fig, ax = _subplots(figsize=(6, 3.2))
    bars = ax.barh(["bare matmul + top-k", "evaluator"], [bare, ev], color=["tab:gray", "tab:blue"])
    ax.bar_label(bars, fmt="%.2f s", fontsize=8)
    ax.set_xlabel("seconds (median)")
    ax.set_title(f"Full ranking of {args.get('num_users')} users x {args.get('num_books')} books: {ratio:.2f}x")
    return _save(fig, path)
