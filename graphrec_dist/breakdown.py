"""Ranking metrics broken down by how popular the held-out item is in training.

A full-ranking evaluation gives one number per model; two models with the same NDCG@10 can win on
very different items (a low-rank model tends to do better on the long tail, an item-item model on
the popular head). ``graphrec-dist evaluate --by-popularity N`` cuts the held-out rows into N
groups by their item's number of training interactions (quantile edges over the rows, so the
groups are about equal in size; rows with the same count always share a group) and reports each
group's metrics, computed per held-out row.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from graphrec_dist import metrics


def popularity_groups(train_counts: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(group of each row in 0..G-1, [G, 2] lowest and highest training count of each group) for
    rows whose held-out items have ``train_counts``; G <= ``num_groups`` when counts tie at edges."""
    if num_groups < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}")
    edges = np.unique(np.quantile(train_counts, np.linspace(0, 1, num_groups + 1)[1:-1], method="lower"))
    group = np.searchsorted(edges, train_counts, side="left")  # count == edge closes that group
    used = np.unique(group)
    group = np.searchsorted(used, group)  # renumber past empty groups
    bounds = np.array([[train_counts[group == g].min(), train_counts[group == g].max()] for g in range(len(used))])
    return group, bounds.reshape(-1, 2)


def by_popularity(ranks: torch.Tensor, items: np.ndarray, train_items: np.ndarray, num_books: int,
                  num_groups: int, ks: list[int]) -> list[dict[str, Any]]:
    """Per popularity group of the held-out ``items`` (one per row, with ``ranks``): its training
    count range, row count and mean per-row metrics (``metrics.metric_names(ks)``)."""
    counts = np.bincount(train_items, minlength=num_books)[items]
    group, bounds = popularity_groups(counts, num_groups)
    values = metrics.per_user_values(ranks, torch.arange(len(items)), len(items), ks)
    names = metrics.metric_names(ks)
    out = []
    for g, (lo, hi) in enumerate(bounds):
        rows = torch.from_numpy(group == g)
        means = values[rows].mean(dim=0).tolist()
        out.append({"train_count": [int(lo), int(hi)], "rows": int(rows.sum()),
                    **{name: float(v) for name, v in zip(names, means)}})
    return out
