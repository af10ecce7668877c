"""Block sampling (graphrec_dist/models/block_sampler.py): per-layer blocks that compute only what the
layer above reads, checked against the full graph and against the edges they were drawn from."""
from __future__ import annotations

import pytest
import torch
from test_sampling import toy_bundle

from graphrec_dist.config import load_config
from graphrec_dist.data.bundle import BOOK, RATES, REV_RATES, USER
from graphrec_dist.distributed import DistContext
from graphrec_dist.models import build_model
from graphrec_dist.models.block_sampler import BlockSampler
from graphrec_dist.models.sage_encoder import layer_edge_types
from graphrec_dist.sampling import TripletLoader


@pytest.mark.parametrize("aggr", ["mean", "sum"])
def test_blocks_with_every_neighbour_reproduce_full_graph_inference(aggr: str) -> None:
    bundle = toy_bundle()
    cfg = load_config(None, ["train.mode=sampled", "model.emb_dim=8", "model.hidden_dim=8", "model.num_layers=2",
                             "train.num_neighbors=[-1,-1]", f"model.aggr={aggr}"])
    torch.manual_seed(0)
    model = build_model(cfg, bundle).eval()
    assert model.kind == "triplet"  # blocks are sampled inside the model, from index batches
    batch = next(iter(TripletLoader(bundle, 8, 2, seed=0, rank=0, world_size=1).epoch(0)))
    out = model.bpr_forward(batch)
    full = model.embed_all(bundle, DistContext())
    hu, hb = full[USER][batch.users], full[BOOK]
    assert torch.allclose(out.pos, (hu * hb[batch.pos]).sum(-1), atol=1e-5)
    assert torch.allclose(out.neg, (hu.unsqueeze(1) * hb[batch.neg]).sum(-1), atol=1e-5)


def _sampler(k: list[int]):
    bundle = toy_bundle(num_users=30, num_books=12, per_user=6)
    layers = layer_edge_types(list(bundle.graph.edge_types), 2)
    return bundle, BlockSampler(bundle.graph, layers, k, use_weight=True, aggr="mean")


def test_each_destination_gets_min_degree_k_true_in_neighbours_destinations_first() -> None:
    bundle, sampler = _sampler([3, 2])
    users, books = torch.tensor([0, 4, 7]), torch.tensor([1, 5])
    blocks = sampler.sample({USER: users, BOOK: books}, torch.Generator().manual_seed(0))
    last = blocks.adj[-1]
    assert blocks.num_out[-1] == {USER: 3, BOOK: 2}
    layer0_users = blocks.n_id[USER]
    # rev_rates into the 3 seed users in the last layer: each keeps min(degree, 3) sampled books.
    adj_t = last[REV_RATES].adj_t
    crow = adj_t.crow_indices()
    degree = torch.bincount(bundle.graph[REV_RATES].edge_index[1], minlength=bundle.num_users)
    assert torch.equal(crow[1:4] - crow[:3], torch.clamp(degree[users], max=3))
    assert int(crow[-1]) == int(crow[3])  # rows past the destinations get nothing
    # Every sampled (book -> user) pair is a real edge; values make a mean (rows sum to 1).
    edges = set(map(tuple, bundle.graph[REV_RATES].edge_index.T.tolist()))
    books_at_input = _node_list(blocks, sampler, BOOK, layer=len(blocks.adj) - 1)
    for r in range(3):
        cols = adj_t.col_indices()[crow[r]:crow[r + 1]]
        assert all((int(books_at_input[c]), int(users[r])) in edges for c in cols)
        assert float(adj_t.values()[crow[r]:crow[r + 1]].sum()) == pytest.approx(1.0)
    assert torch.equal(layer0_users[:3], users)  # the seeds lead every node list


def _node_list(blocks, sampler, nt: str, layer: int) -> torch.Tensor:
    """Global ids of type ``nt`` read by ``layer``: re-derived from the next-lower layer's output
    order, which is the node list that layer's block indexes."""
    if layer == 0:
        return blocks.n_id[nt]
    # Layer l reads layer l-1's outputs; with destinations first they are the first rows of
    # layer l-1's own node list, i.e. a prefix of blocks.n_id (a 2-layer model: layer 1 reads
    # the first num_out[0] rows of the input list).
    return blocks.n_id[nt][:blocks.num_out[layer - 1][nt]]


def test_sampling_is_deterministic_per_seed_and_excludes_the_batch_positives() -> None:
    _, sampler = _sampler([2, 2])
    seeds = {USER: torch.tensor([0, 1, 2]), BOOK: torch.tensor([3, 4])}
    a = sampler.sample(seeds, torch.Generator().manual_seed(5))
    b = sampler.sample(seeds, torch.Generator().manual_seed(5))
    c = sampler.sample(seeds, torch.Generator().manual_seed(6))
    same = all(torch.equal(x[et].adj_t.col_indices(), y[et].adj_t.col_indices())
               for x, y in zip(a.adj, b.adj) for et in x)
    assert same and all(torch.equal(a.n_id[t], b.n_id[t]) for t in a.n_id)
    assert not all(torch.equal(a.n_id[t], c.n_id[t]) for t in a.n_id)  # another seed, other draws
    bundle, sampler = _sampler([-1, -1])
    users, books = bundle.graph[RATES].edge_index[:, :4]
    seeds = {USER: torch.unique(users), BOOK: torch.unique(books)}
    blocks = sampler.sample(seeds, torch.Generator().manual_seed(0), exclude=(users, books))
    # The first layer reads the input node list directly; the seed users are its first rows.
    adj_t = blocks.adj[0][REV_RATES].adj_t
    crow, col = adj_t.crow_indices(), adj_t.col_indices()
    kept = 0
    for u, bk in zip(users.tolist(), books.tolist()):
        r = int((seeds[USER] == u).nonzero())
        neighbours = blocks.n_id[BOOK][col[crow[r]:crow[r + 1]]].tolist()
        assert bk not in neighbours
        kept += len(neighbours)
    assert kept > 0  # the other books of those users are still there
