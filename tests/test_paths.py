import pytest
import torch
from test_graphsage import _model
from test_sampling import toy_bundle

from graphrec_dist.config import load_config
from graphrec_dist.data.bundle import SIMILAR
from graphrec_dist.distributed import DistContext
from graphrec_dist.errors import ConfigError
from graphrec_dist.losses import full_softmax_loss
from graphrec_dist.models import build_model
from graphrec_dist.models.base import TripletBatch
from graphrec_dist.models.paths import PathScorer, PathTerm, _PathSpMM, _Relation, history_csr


def _term(edge_weights: bool = False, norm: float = 0.0) -> PathTerm:
    # 4 items; co_items: 0->1 (0.5), 0->2 (0.25), 3->1 (1.0); similar: 2->1 (0.8)
    rel = {"co_items": (torch.tensor([0, 0, 3]), torch.tensor([1, 2, 1]), torch.tensor([0.5, 0.25, 1.0])),
           "similar": (torch.tensor([2]), torch.tensor([1]), torch.tensor([0.8]))}
    return PathTerm(4, rel, norm, edge_weights)


def test_path_scores_sum_the_weights_of_paths_from_the_history_by_hand() -> None:
    term = _term()
    with torch.no_grad():
        term.alpha.copy_(torch.tensor([2.0, 10.0]))
    indptr, items = history_csr(torch.tensor([[0, 0], [0, 3], [1, 2]]), 2)  # user 0: {0, 3}; user 1: {2}
    s = term.scores(indptr, items, torch.tensor([0, 1]))
    # user 0 -> item 1 via 0 (2*0.5) and via 3 (2*1.0); -> item 2 via 0 (2*0.25); user 1 -> 1 via 2 (10*0.8)
    assert torch.allclose(s, torch.tensor([[0.0, 3.0, 0.5, 0.0], [0.0, 8.0, 0.0, 0.0]]))
    # history length normalisation: user 0 has 2 items
    normed = _term(norm=1.0)
    assert torch.allclose(normed.scores(indptr, items, torch.tensor([0]))[0, 1], torch.tensor(0.75))


def test_excluded_pairs_and_new_items_leave_the_history_and_new_items_lose_co_edges() -> None:
    term = _term()
    indptr, items = history_csr(torch.tensor([[0, 0], [0, 3], [0, 2]]), 1)
    full = term.scores(indptr, items, torch.tensor([0]))[0]
    assert torch.allclose(full, torch.tensor([0.0, 2.3, 0.25, 0.0]))
    no_three = term.scores(indptr, items, torch.tensor([0]), exclude=torch.tensor([[0, 3]]))[0]
    assert torch.allclose(no_three, torch.tensor([0.0, 1.3, 0.25, 0.0]))
    new = torch.tensor([False, True, False, False])  # item 1 new: its co in-edges vanish, similar stays
    assert torch.allclose(term.scores(indptr, items, torch.tensor([0]), new_items=new)[0],
                          torch.tensor([0.0, 0.8, 0.25, 0.0]))


def test_a_positive_is_scored_with_co_weights_that_leave_its_user_out() -> None:
    # items 0, 1 with 3 and 2 users, 2 users having both: cosine 2 / sqrt(6); without one of them
    # 1 / sqrt(2 * 1)
    cos = 2 / 6 ** 0.5
    rel = {"co_items": (torch.tensor([0]), torch.tensor([1]), torch.tensor([cos]))}
    term = PathTerm(2, rel, 0.0, False, item_counts=torch.tensor([3.0, 2.0]))
    indptr, items = history_csr(torch.tensor([[0, 0], [0, 1]]), 1)
    plain = term.scores(indptr, items, torch.tensor([0]))[0, 1]
    trained = term.scores(indptr, items, torch.tensor([0]), exclude=torch.tensor([[0, 1]]))[0, 1]
    assert torch.isclose(plain, torch.tensor(cos)) and torch.isclose(trained, torch.tensor(1 / 2 ** 0.5))


def test_per_edge_offsets_are_learned_from_the_loss() -> None:
    term = _term(edge_weights=True)
    indptr, items = history_csr(torch.tensor([[0, 0]]), 1)
    loss = -torch.log_softmax(term.scores(indptr, items, torch.tensor([0])), dim=1)[0, 2]
    loss.backward()
    def edge(src: int, dst: int) -> int:
        srcs, dsts = term.edges()
        return int(((srcs == src) & (dsts == dst)).nonzero())
    assert term.delta.grad[edge(0, 2)] < 0  # the 0->2 edge leads to the positive: pushed up
    assert term.delta.grad[edge(0, 1)] > 0  # 0->1 leads to a competitor: pushed down
    assert term.delta.grad[edge(2, 1)] == 0  # on no path of this history


@pytest.mark.parametrize("dense_grad", [0, 10**9])
def test_both_products_give_the_same_scores_and_gradients(dense_grad: int, monkeypatch) -> None:
    """The CSR kernel (its gradient chunked by edges or from one dense product) and the
    enumeration of history entries' out-edges are one product."""
    monkeypatch.setattr(_PathSpMM, "DENSE_GRAD_RATIO", dense_grad)
    g = torch.Generator().manual_seed(0)
    n, e = 30, 200
    rel = {"co_items": (torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g),
                        torch.rand(e, generator=g))}
    term = PathTerm(n, rel, 0.5, True)
    with torch.no_grad():
        term.delta.copy_(torch.randn(term.num_edges, generator=g))
    x = (torch.rand(n, 7, generator=g) < 0.2).float() * torch.rand(n, 7, generator=g)
    weight = torch.randn(n, 7, generator=g)
    grads = []
    # A scatter priced out (the CSR kernel), then free (enumerated), then a dense matrix product.
    for cost, dense_ratio in ((1e12, 0), (0.0, 0), (1e12, 10**9)):
        term.SCATTER_COST = cost
        monkeypatch.setattr(_Relation, "DENSE_RATIO", dense_ratio)
        values = term.edge_values()
        values.retain_grad()
        out = term._product(x, values=values)
        (out * weight).sum().backward()
        grads.append((out.detach(), values.grad.clone()))
    for other in grads[1:]:
        assert torch.allclose(grads[0][0], other[0], atol=1e-5)
        assert torch.allclose(grads[0][1], other[1], atol=1e-5)
    assert float(grads[0][0].abs().sum()) > 0 and float(grads[0][1].abs().sum()) > 0


@pytest.mark.parametrize("scatter_cost,dense_ratio", [(0.0, 0), (1e12, 0), (1e12, 10**9)])
def test_fixed_weights_give_the_differentiated_products_scores_and_scale_gradients(
        scatter_cost: float, dense_ratio: int, monkeypatch) -> None:
    """Without per-edge offsets each relation's product is taken without autograd and only its
    scale is differentiated: the same scores and alpha gradients as differentiating every edge
    weight, with new items' co-interaction edges masked alike."""
    g = torch.Generator().manual_seed(1)
    n, e = 30, 200
    rel = {name: (torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g),
                  torch.rand(e, generator=g)) for name in ("co_items", "similar")}
    term = PathTerm(n, rel, 0.5, False)
    term.SCATTER_COST = term.FIXED_SCATTER_COST = scatter_cost
    monkeypatch.setattr(_Relation, "DENSE_RATIO", dense_ratio)
    with torch.no_grad():
        term.alpha.copy_(torch.tensor([0.7, -1.3]))
    x = (torch.rand(n, 7, generator=g) < 0.2).float()
    new = torch.rand(n, generator=g) < 0.3
    weight = torch.randn(n, 7, generator=g)
    results = []
    for values in (None, "every edge"):
        term.alpha.grad = None
        out = term._product(x, new, None if values is None else term.edge_values())
        (out * weight).sum().backward()
        results.append((out.detach(), term.alpha.grad.clone()))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-4)
    assert bool((results[0][1] != 0).all())


@pytest.mark.parametrize("edge_weights", [False, True])
def test_restricted_scores_are_the_full_tables_columns_and_pairs_with_the_same_gradients(edge_weights: bool) -> None:
    """What a shared softmax reads (some items' columns, drawn with repeats, and the batch's pairs)
    equals the full table's entries, leave-user-out corrections and new items included, and so
    does every parameter's gradient."""
    g = torch.Generator().manual_seed(2)
    n, e, users = 40, 300, 6
    rel = {name: (torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g),
                  torch.rand(e, generator=g) * 0.5) for name in ("co_items", "similar")}
    term = PathTerm(n, rel, 0.5, edge_weights, item_counts=torch.randint(3, 9, (n,), generator=g).float())
    with torch.no_grad():
        term.alpha.copy_(torch.tensor([0.7, -1.3]))
        if edge_weights:
            term.delta.copy_(torch.randn(term.num_edges, generator=g) * 0.1)
    train = torch.stack([torch.randint(0, users, (60,), generator=g), torch.randint(0, n, (60,), generator=g)], 1)
    indptr, items = history_csr(torch.unique(train, dim=0), users)
    rows = torch.tensor([4, 1, 3])
    exclude = torch.tensor([[0, int(items[indptr[4]])], [1, int(items[indptr[1]])], [1, int(items[indptr[1] + 1])]])
    columns = torch.cat([exclude[:, 1], torch.randint(0, n, (12,), generator=g), exclude[:1, 1]])  # repeats
    pairs = torch.cat([exclude, torch.tensor([[2, 5], [0, 7], [1, int(exclude[2, 1])]])])
    new = torch.rand(n, generator=g) < 0.2
    new[exclude[:, 1]] = False
    weight_cols, weight_pairs = torch.randn(len(rows), len(columns), generator=g), torch.randn(len(pairs), generator=g)
    results = []
    for restricted in (False, True):
        term.zero_grad()
        if restricted:
            table, at = term.restricted_scores(indptr, items, rows, columns, pairs, exclude, new)
        else:
            full = term.scores(indptr, items, rows, exclude, new)
            table, at = full[:, columns], full[pairs[:, 0], pairs[:, 1]]
        ((table * weight_cols).sum() + (at * weight_pairs).sum()).backward()
        results.append([table.detach(), at.detach()] + [p.grad.clone() for p in term.parameters()])
    assert bool(results[0][0].abs().sum() > 0) and bool(results[0][1].abs().sum() > 0)
    for full, restricted in zip(*results):
        assert torch.allclose(full, restricted, atol=1e-5)


@pytest.mark.parametrize("mode", ["train.mode=full_graph", "train.num_neighbors=[-1,-1]"])
def test_graphsage_with_paths_scores_training_and_ranking_alike(mode) -> None:
    """A positive's training score leaves it out of its user's history; with no self loops that
    changes no path into it, so with one positive per user training and ranking scores agree (with
    path.norm 0: the normaliser counts the history, which is one item shorter in training)."""
    model, bundle = _model("graphsage", "train.mode=sampled", mode, "model.path.relations=[co_items,similar]",
                           "model.path.top_k=5", "model.path.norm=0", "model.path.leave_user_out=false")
    assert model.path is not None and model.path.num_edges > 0
    with torch.no_grad():
        model.path.alpha.fill_(3.0)  # a term large enough to matter
    model.eval()
    first = torch.unique(bundle.train[:, 0], return_inverse=True)[1]
    rows = bundle.train[torch.tensor([int((first == u).nonzero()[0]) for u in range(int(first.max()) + 1)])]
    batch = TripletBatch(rows[:, 0].contiguous(), rows[:, 1].contiguous(),
                         torch.randint(bundle.num_books, (len(rows), 3)))
    out = model.bpr_forward(batch)
    scorer = model.scorer(bundle, DistContext())
    assert isinstance(scorer, PathScorer)
    full = scorer.scores(batch.users)
    assert torch.allclose(out.pos, full[torch.arange(len(rows)), batch.pos], atol=1e-5)
    # Paths out of the positive do change: its negatives are scored without them.
    n = torch.arange(len(rows))
    rest = model.path.scores(*history_csr(bundle.train, bundle.num_users), batch.users,
                             exclude=torch.stack([n, batch.pos], dim=1))
    emb = scorer.user_emb[batch.users] @ scorer.item_emb.T
    assert torch.allclose(out.neg, (emb + rest).gather(1, batch.neg), atol=1e-5)
    path_only = full - emb
    assert float(path_only.abs().max()) > 0.1
    if out.extra is not None:
        model.train()
        out = model.bpr_forward(batch)
        full_softmax_loss(out.user, out.items, batch.pos, extra=out.extra).backward()
        assert float(model.path.alpha.grad.abs().sum()) > 0 and float(model.path.delta.grad.abs().sum()) > 0


def test_a_shared_softmax_step_scores_the_drawn_items_as_the_full_table_does() -> None:
    """With train.softmax_negatives the full-graph step draws the shared items itself and scores
    only those: the same positives, negatives and drawn columns as the full table, and the loss
    competes with exactly those items."""
    model, bundle = _model("graphsage", "train.mode=full_graph", "train.loss=softmax", "train.softmax_negatives=64",
                           "model.path.relations=[co_items,similar]", "model.path.top_k=5")
    with torch.no_grad():
        model.path.alpha.fill_(3.0)
    model.eval()
    rows = bundle.train[::3]  # a few positives per user: the rest of each history has paths
    n = len(rows)
    batch = TripletBatch(rows[:, 0].contiguous(), rows[:, 1].contiguous(), torch.randint(bundle.num_books, (n, 3)))
    zeros = torch.zeros(n), torch.zeros(n, 3)
    pos, neg, extra = model.with_path(batch.users, batch.pos, batch.neg, *zeros, {}, shared=64)
    pos_full, neg_full, full = model.with_path(batch.users, batch.pos, batch.neg, *zeros, {})
    assert extra.columns is not None and extra.table.shape == (len(full.table), 64)
    assert torch.allclose(pos, pos_full, atol=1e-5) and torch.allclose(neg, neg_full, atol=1e-5)
    assert torch.allclose(extra.table, full.table[:, extra.columns], atol=1e-5)
    assert float(extra.table.abs().max()) > 0.1
    model.train()
    out = model.bpr_forward(batch)
    assert out.extra.columns is not None and len(out.extra.columns) == 64


def test_path_co_items_is_refused_under_user_sharding() -> None:
    sharded = ["dist.sharding=users", "train.mode=full_graph"]
    with pytest.raises(ConfigError, match="model.path.relations"):
        load_config("configs/debug.yaml", [*sharded, "model.path.relations=[co_items]"])
    load_config("configs/debug.yaml", [*sharded, "model.path.relations=[similar]"])


def test_a_model_without_side_relations_gets_no_similar_paths() -> None:
    """graphsage_ui (and model.exclude_relations=[similar]) leave the TF-IDF edges out of their graph,
    so their path term cannot bring them back in."""
    bundle = toy_bundle()
    bundle.graph[SIMILAR].edge_index = torch.tensor([[0, 1, 2], [1, 2, 0]])
    bundle.graph[SIMILAR].edge_weight = torch.tensor([0.5, 0.4, 0.3])

    def path_edges(name: str, *extra: str) -> int:
        cfg = load_config(None, [f"model.name={name}", "model.emb_dim=8", "model.path.relations=[similar]", *extra])
        return build_model(cfg, bundle).path.num_edges

    assert path_edges("graphsage") == 3
    assert path_edges("graphsage_ui") == 0
    assert path_edges("graphsage", "model.exclude_relations=[similar]") == 0


def test_path_edge_lr_gives_the_offsets_a_gradient_sized_step_of_their_own() -> None:
    """Under Adam every offset with a gradient moves by ~lr, however small and rare its gradient;
    with model.path.edge_lr the offsets take momentum-SGD steps (lr x gradient) in their own group,
    decayed by 1 - path.edge_lr * path.decay, and every other parameter keeps train.lr under Adam."""
    from graphrec_dist.trainer import param_groups

    bundle = toy_bundle()
    bundle.graph[SIMILAR].edge_index = torch.tensor([[0, 1, 2], [1, 2, 0]])
    bundle.graph[SIMILAR].edge_weight = torch.tensor([0.5, 0.4, 0.3])

    def first_step(*extra: str) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
        cfg = load_config(None, ["model.emb_dim=8", "model.path.relations=[similar]", "model.path.edge_weights=true",
                                 "train.lr=0.01", *extra])
        model = build_model(cfg, bundle)
        groups = param_groups(model, 0.0)
        opt = torch.optim.AdamW(groups, lr=cfg.train.lr, weight_decay=0.0)
        delta = model.path.delta
        grad = torch.tensor([1e-4, -2e-4, 0.0])
        with torch.no_grad():
            delta.copy_(torch.tensor([0.0, 0.0, 1.0]))
        delta.grad = grad.clone()
        opt.step()
        return groups, delta.detach().clone(), grad

    groups, adam, grad = first_step()
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0
    assert torch.allclose(adam[:2], -0.01 * grad[:2].sign(), rtol=1e-3)  # ~lr whatever the gradient
    groups, sgd, grad = first_step("model.path.edge_lr=100", "model.path.decay=0.001")
    own = [g for g in groups if g.get("eps") == 1.0]
    assert len(groups) == 2 and len(own) == 1 and own[0]["lr"] == 100 and own[0]["weight_decay"] == 0.001
    assert [p.numel() for p in own[0]["params"]] == [3]
    assert torch.allclose(sgd[:2], -100 * grad[:2], rtol=1e-3)  # the gradient's size, times lr
    assert sgd[2].item() == pytest.approx(1.0 * (1 - 100 * 0.001))  # decayed, no gradient
    with pytest.raises(ConfigError, match="model.path.edge_lr"):
        load_config(None, ["model.path.edge_lr=0"])
