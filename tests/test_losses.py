import math

import pytest
import torch

from graphrec_dist.losses import bpr_loss, full_softmax_loss, ranking_loss, sampled_softmax_loss, shared_softmax_loss
from graphrec_dist.models.base import RowScores


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


def test_sampled_softmax_is_cross_entropy_of_the_positive_against_its_negatives_by_hand() -> None:
    pos = torch.tensor([2.0, 0.0])
    neg = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    rows = [(2.0, [0.0, 1.0]), (0.0, [0.0, 3.0])]
    expected = sum(-p + math.log(math.exp(p) + sum(math.exp(n) for n in ns)) for p, ns in rows) / 2
    assert sampled_softmax_loss(pos, neg).item() == pytest.approx(expected, rel=1e-6)


def test_full_softmax_ranks_each_positive_against_every_item() -> None:
    user = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    target = torch.tensor([2, 1])
    logits = [[1.0, 0.0, 1.0], [0.0, 2.0, 2.0]]
    expected = sum(-row[t] + math.log(sum(math.exp(v) for v in row)) for row, t in zip(logits, [2, 1])) / 2
    assert full_softmax_loss(user, items, target).item() == pytest.approx(expected, rel=1e-6)


def test_ranking_loss_uses_every_item_when_the_model_gives_them_and_the_negatives_otherwise() -> None:
    pos, neg = torch.tensor([1.0]), torch.tensor([[0.5]])
    user, items = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.5, 0.0], [3.0, 0.0]])
    full = ranking_loss("softmax", pos, neg, user, items, torch.tensor([0]))
    assert full.item() == pytest.approx(full_softmax_loss(user, items, torch.tensor([0])).item())
    assert full.item() > sampled_softmax_loss(pos, neg).item()  # item 2 outscores the positive
    assert ranking_loss("softmax", pos, neg).item() == pytest.approx(sampled_softmax_loss(pos, neg).item())
    bpr = ranking_loss("bpr", pos, neg, user, items, torch.tensor([0]))
    assert bpr.item() == pytest.approx(bpr_loss(pos, neg).item())
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        ranking_loss("hinge", pos, neg)


def test_shared_softmax_masks_the_positive_when_it_is_drawn_and_uses_the_drawn_items() -> None:
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    pos_items = torch.tensor([0, 1])
    pos = (user * items[pos_items]).sum(-1)
    torch.manual_seed(0)
    drawn = torch.randint(3, (50,))
    torch.manual_seed(0)
    loss = shared_softmax_loss(pos, user, items, pos_items, 50)
    expected = 0.0
    for r in range(2):
        others = [float(user[r] @ items[d]) for d in drawn.tolist() if d != int(pos_items[r])]
        p = float(pos[r])
        expected += -p + math.log(math.exp(p) + sum(math.exp(o) for o in others))
    assert loss.item() == pytest.approx(expected / 2, rel=1e-5)
    torch.manual_seed(0)
    routed = ranking_loss("softmax", pos, torch.zeros(2, 1), user, items, pos_items, num_shared=50)
    assert routed.item() == pytest.approx(loss.item())


def test_full_softmax_once_per_distinct_user_is_the_same_loss_and_gradient() -> None:
    # train.softmax_per_user: rows of the same user share one softmax; loss and gradients equal the
    # per-row softmax up to rounding.
    gen = torch.Generator().manual_seed(0)
    emb, items = torch.randn(5, 4, generator=gen), torch.randn(9, 4, generator=gen)
    ids = torch.tensor([3, 0, 3, 1, 3, 0, 4])
    pos = torch.tensor([1, 2, 5, 0, 8, 8, 3])
    grads = []
    for user_ids in (None, ids):
        e, it = emb.clone().requires_grad_(), items.clone().requires_grad_()
        loss = full_softmax_loss(e[ids], it, pos, user_ids)
        loss.backward()
        grads.append((loss.detach(), e.grad, it.grad))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_full_softmax_with_seen_items_masked_matches_a_hand_computation() -> None:
    # Each positive competes with the items its user has not seen, plus itself.
    gen = torch.Generator().manual_seed(0)
    user, items = torch.randn(5, 4, generator=gen), torch.randn(7, 4, generator=gen)
    user_ids = torch.tensor([3, 1, 3, 0, 1])
    user = user[[0, 1, 0, 3, 1]]  # rows of one user share its vector
    pos = torch.tensor([2, 5, 6, 0, 1])
    seen_by = {0: [0, 4], 1: [1, 5], 2: [], 3: [2, 3, 6]}
    indptr = torch.tensor([0, 2, 4, 4, 7])
    seen = (indptr, torch.tensor([i for u in range(4) for i in seen_by[u]]))
    expected = []
    for r in range(5):
        scores = user[r] @ items.T
        keep = [i for i in range(7) if i not in seen_by[int(user_ids[r])] or i == int(pos[r])]
        expected.append(torch.logsumexp(scores[keep], 0) - scores[pos[r]])
    got = full_softmax_loss(user, items, pos, user_ids, seen=seen)
    assert torch.allclose(got, torch.stack(expected).mean(), atol=1e-6)
    assert got < full_softmax_loss(user, items, pos, user_ids)  # fewer competitors, lower loss


@pytest.mark.parametrize("table_order", ["sorted users", "shuffled"])
def test_extra_scores_kept_once_per_user_give_the_loss_and_gradient_of_their_rows(table_order: str) -> None:
    """RowScores (a table of distinct rows and each batch row's index into it) is the same extra
    score as its [n, num_items] rows, per distinct user, per row, with seen items masked or not."""
    g = torch.Generator().manual_seed(0)
    user_ids = torch.tensor([3, 1, 3, 0, 1, 3])
    distinct, row = torch.unique(user_ids, return_inverse=True)
    perm = torch.arange(len(distinct)) if table_order == "sorted users" else torch.tensor([2, 0, 1])
    table = torch.randn(len(distinct), 5, generator=g)[perm].requires_grad_()
    index = torch.argsort(perm)[row]  # row r's table row, wherever the table holds its user
    user = torch.randn(4, 3, generator=g)[user_ids]
    items = torch.randn(5, 3, generator=g)
    pos = torch.tensor([0, 2, 4, 1, 3, 2])
    seen = (torch.tensor([0, 1, 2, 2, 4]), torch.tensor([3, 0, 1, 4]))
    for ids, mask in ((None, None), (user_ids, None), (user_ids, seen)):
        table.grad = None
        full_softmax_loss(user, items, pos, ids, mask, RowScores(table, index)).backward()
        kept = table.grad.clone()
        dense = table.detach().clone().requires_grad_()
        rows = RowScores(dense, index).rows()
        assert torch.equal(rows[2], rows[0]) and torch.equal(rows[4], rows[1])
        loss = full_softmax_loss(user, items, pos, ids, mask, RowScores(rows, torch.arange(len(pos))))
        loss.backward()
        assert torch.allclose(kept, dense.grad, atol=1e-6) and float(kept.abs().sum()) > 0


def test_shared_softmax_with_scores_of_the_drawn_items_only_equals_it_with_every_items_scores() -> None:
    """A model that drew the shared items and scored only those (RowScores.columns) gives the loss
    that the whole table gives when the loss draws the same items."""
    g = torch.Generator().manual_seed(3)
    user, items = torch.randn(6, 4, generator=g), torch.randn(30, 4, generator=g)
    pos_items = torch.randint(0, 30, (6,), generator=g)
    pos = (user * items[pos_items]).sum(1)
    table, index = torch.randn(4, 30, generator=g), torch.tensor([0, 1, 1, 2, 3, 3])
    torch.manual_seed(7)
    drawn = torch.randint(30, (10,))
    torch.manual_seed(7)
    every = shared_softmax_loss(pos, user, items, pos_items, 10, RowScores(table, index))
    some = shared_softmax_loss(pos, user, items, pos_items, 10, RowScores(table[:, drawn], index, drawn))
    assert torch.isclose(every, some)
    assert not torch.isclose(every, shared_softmax_loss(pos, user, items, pos_items, 10))
    with pytest.raises(ValueError, match="only some items"):
        full_softmax_loss(user, items, pos_items, extra=RowScores(table[:, drawn], index, drawn))


def test_full_softmax_with_seen_items_masked_takes_bf16_scoring_vectors() -> None:
    # bf16 vectors give bf16 logits, into which the mask's -inf is written in their own dtype.
    gen = torch.Generator().manual_seed(1)
    user_ids = torch.tensor([0, 2, 0, 1])
    user = torch.randn(3, 4, generator=gen)[user_ids]
    items, pos = torch.randn(6, 4, generator=gen), torch.tensor([1, 3, 4, 0])
    seen = (torch.tensor([0, 2, 3, 5]), torch.tensor([1, 4, 0, 2, 3]))
    want = full_softmax_loss(user.bfloat16().float(), items.bfloat16().float(), pos, user_ids, seen=seen)
    got = full_softmax_loss(user.bfloat16(), items.bfloat16(), pos, user_ids, seen=seen)
    assert got.dtype == torch.bfloat16 and torch.isfinite(got)
    assert torch.allclose(got.float(), want, rtol=2e-2)
