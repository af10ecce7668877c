"""Ranking metrics as pure functions: ranks of held-out items -> per-user values -> sums and counts.

A rank is 0-based (0 = the top of the list) and already follows the tie rule (ties count against
the model). Per user, with ``m`` held-out items of ranks ``r_i``:

- ``hit@K``    = 1 if any ``r_i < K``
- ``recall@K`` = #{i: r_i < K} / m
- ``ndcg@K``   = sum_{r_i < K} 1/log2(r_i + 2) / sum_{j < min(m, K)} 1/log2(j + 2)
- ``mrr``      = 1 / (min_i r_i + 1)

With leave-one-out (m = 1) recall@K equals hit@K; it is still computed from the definition.

Sums are kept in fixed point (int64, :data:`FIXED_POINT_SCALE` units per 1.0) so that adding
them over any number of workers, in any order, gives bit-identical totals; the rounding is below
1e-12 per user, far under any difference a metric can show.
"""
from __future__ import annotations

import torch

FIXED_POINT_SCALE = 2 ** 40  # 53k users x 2^40 stays far below int64's 9.2e18


def metric_names(ks: list[int], suffix: str = "") -> list[str]:
    """Metric keys in their fixed order: hit/ndcg/recall for each K, then mrr (``suffix`` appended)."""
    names = [f"{name}@{k}{suffix}" for k in ks for name in ("hit", "ndcg", "recall")]
    return names + [f"mrr{suffix}"]


def per_user_values(ranks: torch.Tensor, group: torch.Tensor, num_groups: int,
                    ks: list[int]) -> torch.Tensor:
    """float64 [num_groups, len(metric_names(ks))]: each user's metric values.

    ``ranks``: int64 [n] rank of each held-out row; ``group``: int64 [n] the row's user, as an index
    in ``0..num_groups-1`` (every user must own at least one row).
    """
    ranks = ranks.to(torch.float64)
    group = group.to(torch.long)
    m = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, group, torch.ones_like(ranks))
    best = torch.full((num_groups,), float("inf"), dtype=torch.float64)
    best = best.scatter_reduce(0, group, ranks, reduce="amin")
    gain = 1.0 / torch.log2(ranks + 2.0)
    columns = []
    for k in ks:
        in_top = ranks < k
        hits = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, group, in_top.double())
        dcg = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, group, gain * in_top)
        columns += [(best < k).double(), dcg / _ideal_dcg(m, k), hits / m]
    columns.append(1.0 / (best + 1.0))
    return torch.stack(columns, dim=1)


def _ideal_dcg(m: torch.Tensor, k: int) -> torch.Tensor:
    """DCG of a perfect list for users with ``m`` held-out items, cut at ``k``."""
    top = int(min(int(m.max().item()) if m.numel() else 1, k))
    discounts = 1.0 / torch.log2(torch.arange(top, dtype=torch.float64) + 2.0)
    cumulative = torch.cumsum(discounts, 0)
    return cumulative[(m.clamp(max=top) - 1).long()]


def fixed_point_sums(values: torch.Tensor) -> torch.Tensor:
    """int64 [M]: column sums of ``values`` [n, M] in fixed point (order-independent when added)."""
    scaled = torch.round(values.to(torch.float64) * FIXED_POINT_SCALE).to(torch.int64)
    return scaled.sum(dim=0)


def finalize(sums: torch.Tensor, count: int, names: list[str]) -> dict[str, float]:
    """Divide the all-reduced fixed-point ``sums`` by the user ``count`` once; 0.0 when no users."""
    if count <= 0:
        return {name: 0.0 for name in names}
    totals = sums.to(torch.float64) / FIXED_POINT_SCALE
    return {name: float(total / count) for name, total in zip(names, totals.tolist())}
