import dataclasses

import pytest
import torch
import torch.nn.functional as F
import torch_sparse
from test_sampling import toy_bundle

from graphrec_dist.config import load_config
from graphrec_dist.data.bundle import BOOK, RATES, REV_RATES, USER
from graphrec_dist.distributed import DistContext
from graphrec_dist.errors import ConfigError
from graphrec_dist.losses import bpr_loss, full_softmax_loss
from graphrec_dist.models import build_model, graphsage, sage_encoder
from graphrec_dist.models.base import EmbeddingScorer, TripletBatch
from graphrec_dist.models.sage_encoder import WeightedSAGEConv, adjacency, graph_adjacency, layer_edge_types
from graphrec_dist.models.sparse import bipartite_pair, normalised_weight, restrict_rows
from graphrec_dist.run_dir import new_model
from graphrec_dist.sampling import make_link_loader

HAS_TAG = ("book", "has_tag", "tag")
REV_HAS_TAG = ("tag", "rev_has_tag", "book")


def _model(name: str = "graphsage", *overrides: str):
    cfg = load_config(None, [f"model.name={name}", "model.emb_dim=8", "model.hidden_dim=6", *overrides])
    bundle = toy_bundle()
    torch.manual_seed(0)
    return build_model(cfg, bundle), bundle


def test_normalised_weight_averages_one_per_destination() -> None:
    w = normalised_weight(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0, 0, 1]), 2)
    assert torch.allclose(w, torch.tensor([0.5, 1.5, 1.0]))
    assert normalised_weight(None, torch.tensor([0]), 1) is None


def test_weighted_mean_aggregation_by_hand() -> None:
    conv = WeightedSAGEConv(2, 2, aggr="mean", root_weight=False, bias=False)
    with torch.no_grad():
        conv.lin_l.weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    edge_index = torch.tensor([[0, 1], [2, 2]])
    out = conv(x, edge_index, torch.tensor([1.0, 3.0]))
    assert torch.allclose(out[2], torch.tensor([0.25, 0.75]))  # weighted mean of the two sources
    # the SparseTensor path (what the model uses) gives the same numbers
    assert torch.allclose(conv(x, adjacency(edge_index, torch.tensor([1.0, 3.0]), 3, 3))[2], out[2])


def test_last_layer_keeps_only_edge_types_into_users_and_books() -> None:
    ets = [RATES, REV_RATES, HAS_TAG, REV_HAS_TAG]
    first, last = layer_edge_types(ets, 2)
    assert set(first) == set(ets)
    assert set(last) == {RATES, REV_RATES, REV_HAS_TAG}


@pytest.mark.parametrize("overrides", [(), ("model.norm=layer", "model.skip=false"),
                                       ("model.num_layers=3", "train.num_neighbors=[4,3,2]"),
                                       ("model.user_id_embedding=false",)])
def test_sampled_output_with_full_fanout_equals_full_inference(overrides) -> None:
    model, bundle = _model("graphsage", *overrides)
    model.eval()
    layers = model.encoder.layers.__len__()
    ids = torch.arange(0, len(bundle.train), 7)
    batch = next(iter(make_link_loader(bundle, len(ids), [-1] * layers, neg_per_pos=2, edge_ids=ids)))
    with torch.no_grad():
        _, h = model.encode_batch(batch)
        full = model.embed_all(bundle, DistContext())
    users = batch[USER].n_id[batch[USER].src_index]
    books = batch[BOOK].n_id[torch.cat([batch[BOOK].dst_pos_index, batch[BOOK].dst_neg_index.flatten()])]
    assert torch.allclose(h[USER][batch[USER].src_index], full[USER][users], atol=1e-5)
    rows = torch.cat([batch[BOOK].dst_pos_index, batch[BOOK].dst_neg_index.flatten()])
    assert torch.allclose(h[BOOK][rows], full[BOOK][books], atol=1e-5)
    # and the scorer is the dot product of exactly these embeddings
    scores = model.scorer(bundle, DistContext()).scores(users[:3])
    assert torch.allclose(scores, full[USER][users[:3]] @ full[BOOK].T, atol=1e-5)


def test_every_parameter_gets_a_gradient_so_ddp_needs_no_unused_parameter_search() -> None:
    model, bundle = _model("graphsage", "model.norm=layer")
    batch = next(iter(make_link_loader(bundle, 32, [3, 3], edge_ids=torch.arange(32))))
    out = model.bpr_forward(batch)
    (bpr_loss(out.pos, out.neg) + out.reg).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_graphsage_ui_uses_the_user_book_graph_only() -> None:
    model, bundle = _model("graphsage_ui")
    assert set(model.encoder.emb.keys()) == {USER, BOOK}
    full = model.embed_all(bundle, DistContext())
    assert full[USER].shape == (bundle.num_users, 6) and full[BOOK].shape == (bundle.num_books, 6)


def test_an_excluded_relation_leaves_the_model_and_its_sampled_graph() -> None:
    model, bundle = _model("graphsage", "model.exclude_relations=[tag]")
    assert set(model.encoder.emb.keys()) == {USER, BOOK}
    assert set(model.message_graph(bundle).edge_types) == {RATES, REV_RATES}
    assert all(HAS_TAG not in ets and REV_HAS_TAG not in ets for ets in model.encoder.layer_types)
    batch = next(iter(make_link_loader(bundle, 8, [3, 3], edge_ids=torch.arange(8),
                                       graph=model.message_graph(bundle))))
    assert "tag" not in batch.node_types
    out = model.bpr_forward(batch)
    assert torch.isfinite(bpr_loss(out.pos, out.neg))
    kept, _ = _model("graphsage")
    assert "tag" in kept.encoder.emb and HAS_TAG in kept.message_graph(bundle).edge_types


def test_adjacency_keeps_only_own_rows() -> None:
    bundle = toy_bundle()
    adj = graph_adjacency(bundle.graph, True, torch.device("cpu"), DistContext(rank=1, world_size=2))
    rows = adj[RATES].storage.row()
    assert adj[RATES].sparse_sizes() == (bundle.num_books, bundle.num_users)
    assert len(rows) > 0 and bool((rows >= 7).all())  # rank 1 of 2 holds books 7..14


def _triplets(bundle, n: int = 16) -> TripletBatch:
    rows = bundle.train[:n]
    return TripletBatch(rows[:, 0].contiguous(), rows[:, 1].contiguous(), torch.randint(bundle.num_books, (n, 3)))


@pytest.mark.parametrize("overrides", [(), ("model.score=cosine", "model.temperature=0.1", "model.num_layers=2"),
                                       ("model.user_id_embedding=false", "model.skip=false")])
def test_full_graph_training_forward_is_the_inference_forward(overrides) -> None:
    model, bundle = _model("graphsage", "train.mode=full_graph", *overrides)
    assert model.kind == "triplet"
    model.eval()
    batch = _triplets(bundle)
    with torch.no_grad():
        out = model.bpr_forward(batch)
        scorer = model.scorer(bundle, DistContext())
    assert torch.allclose(out.user, scorer.user_emb[batch.users], atol=1e-5)
    assert torch.allclose(out.items, scorer.item_emb, atol=1e-5)
    assert torch.allclose(out.pos, scorer.scores(batch.users)[torch.arange(16), batch.pos], atol=1e-5)
    assert out.neg.shape == (16, 3)


def test_cosine_scores_are_bounded_by_one_over_the_temperature() -> None:
    model, bundle = _model("graphsage", "train.mode=full_graph", "model.score=cosine", "model.temperature=0.25")
    scores = model.scorer(bundle, DistContext()).scores(torch.arange(bundle.num_users))
    assert float(scores.abs().max()) <= 4.0 + 1e-5
    assert float(scores.abs().max()) > 1.0  # not squashed further than the temperature says


def test_full_graph_mode_gives_every_parameter_a_gradient_and_emb_dropout_acts_only_in_training() -> None:
    model, bundle = _model("graphsage", "train.mode=full_graph", "model.emb_dropout=0.5")
    batch = _triplets(bundle)
    out = model.bpr_forward(batch)
    (full_softmax_loss(out.user, out.items, batch.pos) + out.reg).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    torch.manual_seed(1)
    a = model.bpr_forward(batch).pos
    torch.manual_seed(2)
    assert not torch.allclose(a, model.bpr_forward(batch).pos)  # dropout draws differ in training
    model.eval()
    assert torch.equal(model.bpr_forward(batch).pos, model.bpr_forward(batch).pos)


def test_restricted_rows_keep_exactly_their_in_edges() -> None:
    edge_index = torch.tensor([[0, 1, 2, 0, 3], [0, 0, 1, 2, 2]])  # src -> dst
    pair = bipartite_pair(edge_index, torch.tensor([1.0, 3.0, 1.0, 2.0, 2.0]), 4, 3, "mean", torch.device("cpu"))
    sub = restrict_rows(pair, torch.tensor([0, 2]))
    x = torch.arange(8.0).view(4, 2)
    full, part = torch.sparse.mm(pair.adj_t, x), torch.sparse.mm(sub.adj_t, x)
    assert torch.allclose(part[[0, 2]], full[[0, 2]]) and torch.equal(part[1], torch.zeros(2))
    assert torch.allclose(full[0], (0.5 * x[0] + 1.5 * x[1]) / 2)  # weighted mean over dst 0's sources
    assert torch.equal(sub.adj.to_dense(), sub.adj_t.to_dense().T)


def test_item_bias_is_added_to_every_score_in_training_and_ranking() -> None:
    model, bundle = _model("graphsage", "train.mode=full_graph", "model.score=cosine", "model.item_bias=true")
    with torch.no_grad():
        model.item_bias.copy_(torch.arange(bundle.num_books, dtype=torch.float32))
    model.eval()
    batch = _triplets(bundle)
    with torch.no_grad():
        out = model.bpr_forward(batch)
        scorer = model.scorer(bundle, DistContext())
        plain = EmbeddingScorer(*[F.normalize(t, dim=-1) for t in (scorer.user_emb[:, :-1], scorer.item_emb[:, :-1])])
    cos = plain.scores(batch.users) / model.temperature
    expected = cos + torch.arange(bundle.num_books, dtype=torch.float32)
    assert torch.allclose(scorer.scores(batch.users), expected, atol=1e-4)
    assert torch.allclose(out.pos, expected[torch.arange(16), batch.pos], atol=1e-4)
    sampled, _ = _model("graphsage", "model.item_bias=true")
    ids = torch.arange(0, len(bundle.train), 7)
    b = next(iter(make_link_loader(bundle, len(ids), [-1, -1], neg_per_pos=2, edge_ids=ids)))
    with torch.no_grad():
        sampled.item_bias.fill_(1000.0)
        assert bool((sampled.bpr_forward(b).pos > 500).all())  # the sampled path adds it too


def test_history_dropout_keeps_a_random_share_of_edges_scaled_up() -> None:
    n = 4000
    edge_index = torch.stack([torch.arange(n), torch.zeros(n, dtype=torch.long)])
    pair = bipartite_pair(edge_index, None, n, 2, "sum", torch.device("cpu"))
    torch.manual_seed(0)
    sub = restrict_rows(pair, torch.tensor([0]), keep=0.25)
    values = sub.adj_t.values()
    assert abs(len(values) / n - 0.25) < 0.03 and torch.allclose(values, torch.full_like(values, n / len(values)))
    # the row's total is unchanged: what is left is rescaled
    assert float(torch.sparse.mm(sub.adj_t, torch.ones(n, 1))[0]) == pytest.approx(n, rel=1e-4)


def test_dropped_seed_edges_leave_the_mean_of_the_rest_of_the_history() -> None:
    edge_index = torch.tensor([[0, 1, 2, 0, 3], [0, 0, 0, 2, 2]])  # items -> users
    pair = bipartite_pair(edge_index, None, 4, 3, "mean", torch.device("cpu"))
    sub = restrict_rows(pair, torch.tensor([0, 2]), drop=(torch.tensor([0, 2]), torch.tensor([1, 3])))
    x = torch.tensor([[1.0], [10.0], [100.0], [1000.0]])
    out = torch.sparse.mm(sub.adj_t, x)
    assert out[0].item() == pytest.approx((1.0 + 100.0) / 2) and out[2].item() == pytest.approx(1.0)


def test_without_user_id_embeddings_users_differ_only_by_their_neighbours() -> None:
    model, bundle = _model("graphsage", "train.mode=full_graph", "model.user_id_embedding=false")
    assert model.encoder.emb[USER].weight.shape == (1, 8)
    out = model.embed_all(bundle, DistContext())[USER]
    assert not torch.allclose(out[0], out[1])  # different histories, different outputs


@pytest.mark.parametrize("overrides", [("train.mode=full_graph",),
                                       ("train.mode=full_graph", "model.user_id_embedding=false", "model.skip=false"),
                                       ("train.mode=full_graph", "model.hetero_aggr=mean", "model.aggr=sum"),
                                       ("train.mode=sampled", "train.sampler=blocks")])
def test_fused_layers_give_to_heteros_outputs_and_gradients(overrides) -> None:
    """Summed root maps and project-first aggregation change the arithmetic, not the function."""
    results = []
    for fused in (True, False):
        model, bundle = _model("graphsage", f"model.fused_layers={str(fused).lower()}", *overrides)
        model.eval()  # the same id_dropout-free draws on both
        batch = _triplets(bundle)
        out = model.bpr_forward(batch)
        (out.pos.sum() - out.neg.mean()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        with torch.no_grad():
            emb = model.embed_all(bundle, DistContext())
        results.append((out.pos.detach(), grads, emb))
    (pos_a, grad_a, emb_a), (pos_b, grad_b, emb_b) = results
    assert torch.allclose(pos_a, pos_b, atol=1e-5)
    assert grad_a.keys() == grad_b.keys() and len(grad_a) > 4
    for name in grad_a:
        assert torch.allclose(grad_a[name], grad_b[name], atol=1e-5), name
    for nt in emb_a:
        assert torch.allclose(emb_a[nt], emb_b[nt], atol=1e-5), nt


def _no_torch_sparse(monkeypatch) -> None:
    """As on a GPU with a CPU-only torch-sparse: any SparseTensor built fails as it would there."""
    def unusable(*args, **kwargs):
        raise RuntimeError("Not compiled with CUDA support")

    monkeypatch.setattr(sage_encoder, "WITH_TORCH_SPARSE", False)
    monkeypatch.setattr(sage_encoder, "SparseTensor", unusable)
    monkeypatch.setattr(graphsage, "WITH_TORCH_SPARSE", False)  # check_device's message


@pytest.mark.parametrize("aggr", ["mean", "sum"])
def test_without_torch_sparse_inference_and_fold_in_use_torchs_csr_with_the_same_scores(monkeypatch, aggr) -> None:
    model, bundle = _model("graphsage", f"model.aggr={aggr}", "model.num_layers=2", "train.num_neighbors=[3,3]")
    users = torch.arange(bundle.num_users)
    history = bundle.train_csr()
    ctx = DistContext(rank=1, world_size=2)  # a rank's own rows, as under DDP (the gather is a no-op here)
    want = (model.scorer(bundle, DistContext()).scores(users),
            model.history_scorer(bundle, history, DistContext()).scores(users),
            graph_adjacency(bundle.graph, True, torch.device("cpu"), ctx, aggr)[RATES])
    _no_torch_sparse(monkeypatch)
    got = (model.scorer(bundle, DistContext()).scores(users),
           model.history_scorer(bundle, history, DistContext()).scores(users),
           graph_adjacency(bundle.graph, True, torch.device("cpu"), ctx, aggr)[RATES])
    assert torch.allclose(got[0], want[0], atol=1e-5) and torch.allclose(got[1], want[1], atol=1e-5)
    # a rank's rows of the relation aggregate the same (the CSR values include the mean's division)
    x = torch.randn(bundle.num_users, 3)
    assert torch.allclose(torch.sparse.mm(got[2].adj_t, x), torch_sparse.matmul(want[2], x, reduce=aggr), atol=1e-6)


def test_max_aggregation_without_torch_sparse_on_the_device_stops_before_the_run(monkeypatch) -> None:
    _no_torch_sparse(monkeypatch)
    cfg = load_config(None, ["model.aggr=max", "model.emb_dim=8", "model.hidden_dim=6"])
    with pytest.raises(ConfigError, match="model.aggr=max.*torch-sparse is not installed.*model.aggr=mean"):
        new_model(cfg, toy_bundle(), "cpu")
    new_model(load_config(None, ["model.emb_dim=8", "model.hidden_dim=6"]), toy_bundle(), "cpu")  # mean: fine


def test_the_model_takes_its_training_regime_as_an_argument() -> None:
    """build() reads cfg.train once; the model acts on the TrainingRegime it is given."""
    cfg = load_config(None, ["model.emb_dim=8", "model.hidden_dim=6", "train.mode=sampled", "train.sampler=pyg"])
    regime = graphsage.TrainingRegime.from_train(cfg.train)
    assert regime.mode == "sampled" and regime.num_neighbors == tuple(cfg.train.num_neighbors)
    bundle = toy_bundle()
    assert graphsage.GraphSAGERecommender(bundle, cfg.model, regime, user_book_only=False).kind == "sampled"
    full = dataclasses.replace(regime, mode="full_graph", loss="softmax", softmax_negatives=7)
    model = graphsage.GraphSAGERecommender(bundle, cfg.model, full, user_book_only=False)
    assert (model.kind, model.mode, model.shared_negatives) == ("triplet", "full_graph", 7)
