"""model.co_items: the book -> book relation built from training co-interactions (graphsage)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_sampling import toy_bundle

from graphrec_dist.config import load_config
from graphrec_dist.data.bundle import BOOK, Bundle
from graphrec_dist.data.graph3 import co_interaction_edges
from graphrec_dist.distributed import DistContext
from graphrec_dist.errors import ConfigError
from graphrec_dist.losses import full_softmax_loss
from graphrec_dist.models import build_model
from graphrec_dist.models.base import TripletBatch
from graphrec_dist.models.graphsage import CO_ITEMS


def test_co_interaction_edges_by_hand() -> None:
    # Item user sets: 0 {0, 1}, 1 {0, 1, 2}, 2 {0, 2}, 3 {2, 3}; item 4 has no user. The pair
    # (0, 1) appears twice and counts once.
    users = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])
    items = np.array([0, 1, 2, 0, 0, 1, 1, 2, 3, 3])
    src, dst, w = co_interaction_edges(users, items, 5, top_k=2)
    got = {(int(d), int(s)): float(x) for s, d, x in zip(src, dst, w)}
    c01, c02, c12, c13, c23 = 2 / np.sqrt(6), 1 / 2, 2 / np.sqrt(6), 1 / np.sqrt(6), 1 / 2
    want = {(0, 1): c01, (0, 2): c02, (1, 0): c01, (1, 2): c12, (2, 0): c02, (2, 1): c12,
            (3, 2): c23, (3, 1): c13}
    assert got.keys() == want.keys()
    assert all(abs(got[k] - want[k]) < 1e-6 for k in want)
    assert not any(int(s) == int(d) for s, d in zip(src, dst))  # no self loops
    assert list(zip(dst.tolist(), src.tolist())) == sorted(zip(dst.tolist(), src.tolist()))
    assert co_interaction_edges(users, items, 5, top_k=0)[0].size == 0


def _model(bundle: Bundle, *overrides: str):
    cfg = load_config(None, ["model.name=graphsage", "model.emb_dim=8", "model.hidden_dim=8", "model.num_layers=1",
                             "train.mode=full_graph", *overrides])
    torch.manual_seed(0)
    return build_model(cfg, bundle)


def test_the_relation_comes_from_training_pairs_only() -> None:
    bundle = toy_bundle()
    model = _model(bundle, "model.co_items=3")
    graph = model.message_graph(bundle)
    assert CO_ITEMS in graph.edge_types and CO_ITEMS not in bundle.graph.edge_types  # the bundle is untouched
    train = bundle.train.numpy()
    src, dst, w = co_interaction_edges(train[:, 0], train[:, 1], bundle.num_books, 3)
    assert torch.equal(graph[CO_ITEMS].edge_index, torch.from_numpy(np.stack([src, dst])))
    assert torch.equal(graph[CO_ITEMS].edge_weight, torch.from_numpy(w))
    # Every edge joins two items some training user has both of.
    seen = {(int(u), int(b)) for u, b in train}
    users_of = {b: {u for u, x in seen if x == b} for b in range(bundle.num_books)}
    assert all(users_of[int(s)] & users_of[int(d)] for s, d in graph[CO_ITEMS].edge_index.T)
    # Validation and test pairs change nothing: the same training pairs with other held-out
    # pairs (each user's held-out item replaced) give the same relation.
    other = Bundle(bundle.graph, bundle.train, (bundle.val + torch.tensor([0, 3])) % bundle.num_books,
                   (bundle.test + torch.tensor([0, 5])) % bundle.num_books, bundle.books, bundle.users)
    assert torch.equal(model.message_graph(other)[CO_ITEMS].edge_index, graph[CO_ITEMS].edge_index)


def test_off_by_default_and_a_trainable_relation_when_on() -> None:
    bundle = toy_bundle()
    assert CO_ITEMS not in _model(bundle).message_graph(bundle).edge_types
    model = _model(bundle, "model.co_items=4", "model.id_dropout=0.2", "model.score=cosine")
    rows = bundle.train[:16]
    batch = TripletBatch(rows[:, 0].contiguous(), rows[:, 1].contiguous(), torch.randint(bundle.num_books, (16, 3)))
    out = model.bpr_forward(batch)
    (full_softmax_loss(out.user, out.items, batch.pos) + out.reg).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert any("co_rated" in n for n, _ in model.named_parameters())
    scores = model.scorer(bundle, DistContext()).scores(torch.arange(bundle.num_users))
    assert scores.shape == (bundle.num_users, bundle.num_books) and bool(torch.isfinite(scores).all())


def test_co_items_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match="model.co_items"):
        load_config(None, ["model.co_items=-1"])
    assert load_config(None, []).model.co_items == 0
    assert BOOK == CO_ITEMS[0] == CO_ITEMS[2]
