"""The hand-written sparse backward (SpMM) and LightGCN's propagation against numerical gradients.

The graphs here are directed and weighted, so ``adj`` differs from ``adj_t``: a backward that
multiplied by the wrong orientation gives wrong gradients here, while on the symmetric
``D^-1/2 A D^-1/2`` of a real LightGCN view it would go unnoticed.
"""
from __future__ import annotations

import torch
from torch.autograd import gradcheck
from torch.func import functional_call

from graphrec_dist.data.bundle import BOOK, USER
from graphrec_dist.models.lightgcn import LightGCNRecommender
from graphrec_dist.models.sparse import AdjPair, SpMM, adjacency_pair, bipartite_pair

# Users 0-2 and books 3-5 in one node numbering; an edge's reverse, where present, has another
# weight (0 -> 3 is 0.5, 3 -> 0 is 0.9), and some edges have no reverse at all.
SRC = [0, 0, 1, 2, 3, 3, 4, 5]
DST = [3, 4, 4, 5, 0, 1, 2, 0]
WEIGHT = [0.5, 2.0, 1.5, 0.7, 0.9, 1.2, 0.3, 2.5]
NUM_NODES = 6


def _double(pair: AdjPair) -> AdjPair:
    """``pair`` with float64 values (the builders make float32; gradcheck needs float64)."""
    return AdjPair(*(torch.sparse_csr_tensor(m.crow_indices(), m.col_indices(), m.values().double(), size=m.shape)
                     for m in pair))


def _square_pair() -> AdjPair:
    edge_index = torch.tensor([SRC, DST])
    return _double(adjacency_pair(edge_index, torch.tensor(WEIGHT), NUM_NODES, torch.device("cpu")))


def _x(rows: int, cols: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=gen, dtype=torch.float64).requires_grad_()


class _TransposedBackward(torch.autograd.Function):
    """SpMM with the orientation bug this file guards against: backward by ``adj_t``."""

    @staticmethod
    def forward(ctx, x, adj_t, adj):
        ctx.adj_t = adj_t
        return torch.sparse.mm(adj_t, x)

    @staticmethod
    def backward(ctx, grad):
        return torch.sparse.mm(ctx.adj_t, grad), None, None


def test_spmm_sends_messages_from_source_to_destination() -> None:
    pair = _square_pair()
    x = _x(NUM_NODES).detach()
    want = torch.zeros_like(x)
    for s, d, w in zip(SRC, DST, WEIGHT):
        want[d] += w * x[s]
    assert torch.allclose(SpMM.apply(x, pair.adj_t, pair.adj), want, atol=1e-6)
    assert torch.equal(pair.adj.to_dense(), pair.adj_t.to_dense().T)
    assert not torch.equal(pair.adj.to_dense(), pair.adj_t.to_dense())  # the point of this graph


def test_spmm_gradient_on_a_directed_weighted_graph() -> None:
    pair = _square_pair()
    assert gradcheck(lambda x: SpMM.apply(x, pair.adj_t, pair.adj), (_x(NUM_NODES),))
    # The graph is asymmetric enough to catch a backward by the wrong orientation.
    assert not gradcheck(lambda x: _TransposedBackward.apply(x, pair.adj_t, pair.adj), (_x(NUM_NODES),),
                         raise_exception=False)


def test_spmm_gradient_on_a_weighted_bipartite_relation() -> None:
    # 3 users -> 4 books, weighted sum aggregation: adj_t is [4, 3], adj is [3, 4].
    edge_index = torch.tensor([[0, 0, 1, 2, 2], [0, 3, 1, 1, 2]])
    pair = _double(bipartite_pair(edge_index, torch.tensor([1.0, 3.0, 0.5, 2.0, 4.0]), 3, 4, "sum",
                                  torch.device("cpu")))
    assert pair.adj_t.shape == (4, 3) and pair.adj.shape == (3, 4)
    assert gradcheck(lambda x: SpMM.apply(x, pair.adj_t, pair.adj), (_x(3),))


def _lightgcn(num_layers: int = 2) -> LightGCNRecommender:
    model = LightGCNRecommender(torch.tensor([SRC, DST]), torch.tensor(WEIGHT), NUM_NODES, {USER: 0, BOOK: 3},
                                num_users=3, num_books=3, dim=3, num_layers=num_layers).double()
    # The model caches its float32 adjacency; the float64 copy has the same structure and values.
    model._adj = _double(model.adjacency())
    return model


class _Propagation(torch.nn.Module):
    """``model.propagate()`` as a module call, so functional_call can feed it other embeddings."""

    def __init__(self, model: LightGCNRecommender):
        super().__init__()
        self.model = model

    def forward(self) -> torch.Tensor:
        return self.model.propagate()


def test_lightgcn_propagation_by_hand_and_its_gradient() -> None:
    model = _lightgcn()
    prop = _Propagation(model)
    emb = _x(NUM_NODES, seed=1)

    def propagate(weight: torch.Tensor) -> torch.Tensor:
        return functional_call(prop, {"model.net.embedding.weight": weight}, ())

    a = torch.zeros(NUM_NODES, NUM_NODES, dtype=torch.float64)
    a[SRC, DST] = torch.tensor(WEIGHT, dtype=torch.float64)
    x0 = emb.detach()
    x1 = a.T @ x0
    assert torch.allclose(propagate(x0), (x0 + x1 + a.T @ x1) / 3, atol=1e-12)
    assert gradcheck(propagate, (emb,))
