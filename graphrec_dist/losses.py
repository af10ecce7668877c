"""Loss functions: pure, batch-level, easy to check by hand."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Mean BPR loss ``-log sigmoid(s_pos - s_neg)`` over every (positive, negative) pair.

    ``pos``: [n] scores of (user, positive); ``neg``: [n, k] (or [n]) scores of (user, negative).
    ``softplus(-x)`` is ``-log sigmoid(x)`` without overflow for large margins.
    """
    if neg.dim() == 1:
        neg = neg.unsqueeze(1)
    if neg.shape[0] != pos.shape[0]:
        raise ValueError(f"bpr_loss: {pos.shape[0]} positives but {neg.shape[0]} rows of negatives")
    return F.softplus(neg - pos.unsqueeze(1)).mean()
