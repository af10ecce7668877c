"""The training-curve PNG of a run: loss and the validation metric per epoch."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from graphrec_dist.io_utils import atomic_path


def plot_training_curves(history: list[dict[str, Any]], path: str | Path, title: str = "",
                         metric: str = "val_ndcg@10") -> Path:
    """Two panels (training loss; ``metric`` and the matching hit rate) written atomically to ``path``."""
    fig = Figure(figsize=(10, 4))  # not pyplot's: no global state, no display backend
    ax_loss, ax_val = fig.subplots(1, 2)
    loss = [(r["epoch"], r["loss"]) for r in history if "loss" in r]
    if loss:
        ax_loss.plot(*zip(*loss), marker="o")
    ax_loss.set(xlabel="epoch", ylabel="BPR loss (train)", title="training loss")
    hit = metric.replace("ndcg", "hit")
    for key in dict.fromkeys([metric, hit]):
        pts = [(r["epoch"], r[key]) for r in history if key in r]
        if pts:
            ax_val.plot(*zip(*pts), marker="o", label=key)
    ax_val.set(xlabel="epoch", ylabel="validation (full ranking)", title="validation")
    if ax_val.get_legend_handles_labels()[0]:
        ax_val.legend()
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
