import math

import pytest
import torch

from graphrec_dist.losses import bpr_loss


def test_bpr_loss_by_hand() -> None:
    pos = torch.tensor([2.0, 0.0])
    neg = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    # -log sigmoid(pos - neg) for each of the four pairs, averaged.
    pairs = [2.0, 1.0, 0.0, -3.0]
    expected = sum(math.log1p(math.exp(-d)) for d in pairs) / 4
    assert bpr_loss(pos, neg).item() == pytest.approx(expected, rel=1e-6)


def test_bpr_loss_accepts_one_negative_per_row_and_is_stable_for_large_margins() -> None:
    pos = torch.tensor([1000.0, -1000.0])
    neg = torch.tensor([0.0, 0.0])
    loss = bpr_loss(pos, neg)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(500.0, rel=1e-6)  # (0 + 1000) / 2


def test_bpr_loss_gradient_pushes_positive_up_and_negative_down() -> None:
    pos = torch.zeros(3, requires_grad=True)
    neg = torch.zeros(3, 2, requires_grad=True)
    bpr_loss(pos, neg).backward()
    assert (pos.grad < 0).all() and (neg.grad > 0).all()


def test_bpr_loss_rejects_mismatched_rows() -> None:
    with pytest.raises(ValueError, match="2 positives but 3 rows"):
        bpr_loss(torch.zeros(2), torch.zeros(3, 1))
