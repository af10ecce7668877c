import math

import torch

from graphrec_dist import metrics


def test_metric_names_order_and_suffix():
    assert metrics.metric_names([1, 5]) == ["hit@1", "ndcg@1", "recall@1", "hit@5", "ndcg@5", "recall@5", "mrr"]
    assert metrics.metric_names([10], "/C=200")[-1] == "mrr/C=200"


def test_per_user_values_by_hand_one_item_per_user():
    ranks = torch.tensor([0, 2, 7])
    values = metrics.per_user_values(ranks, torch.arange(3), 3, [1, 3])
    hit1, ndcg1, rec1, hit3, ndcg3, rec3, mrr = values.T.tolist()
    assert hit1 == [1.0, 0.0, 0.0]
    assert hit3 == [1.0, 1.0, 0.0] and rec3 == hit3
    assert ndcg1 == [1.0, 0.0, 0.0]
    assert ndcg3 == [1.0, 0.5, 0.0]  # 1/log2(2+2) = 0.5
    assert mrr == [1.0, 1 / 3, 1 / 8]


def test_per_user_values_several_items_per_user():
    # user 0 holds out two items ranked 0 and 3; user 1 one item ranked 1.
    ranks = torch.tensor([0, 3, 1])
    group = torch.tensor([0, 0, 1])
    values = metrics.per_user_values(ranks, group, 2, [3])
    hit, ndcg, recall, mrr = values.T.tolist()
    assert hit == [1.0, 1.0]
    assert recall == [0.5, 1.0]
    assert math.isclose(ndcg[0], 1.0 / (1.0 + 1.0 / math.log2(3)))
    assert math.isclose(ndcg[1], 1.0 / math.log2(3))
    assert mrr == [1.0, 0.5]


def test_fixed_point_sums_are_order_independent_and_add_exactly():
    gen = torch.Generator().manual_seed(0)
    values = torch.rand(1000, 4, generator=gen, dtype=torch.float64)
    whole = metrics.fixed_point_sums(values)
    shuffled = metrics.fixed_point_sums(values[torch.randperm(1000, generator=gen)])
    pieces = metrics.fixed_point_sums(values[:333]) + metrics.fixed_point_sums(values[333:])
    assert torch.equal(whole, shuffled) and torch.equal(whole, pieces)
    means = metrics.finalize(whole, 1000, ["a", "b", "c", "d"])
    assert all(abs(means[k] - v) < 1e-12 for k, v in zip("abcd", values.mean(0).tolist()))


def test_finalize_with_no_users_gives_zeros():
    assert metrics.finalize(torch.zeros(2, dtype=torch.int64), 0, ["hit@1", "mrr"]) == {"hit@1": 0.0, "mrr": 0.0}
