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
from graphrec_dist.models.sparse import AdjPair, SpMM, adjacency_pair, bipartite_pair, csr_rows

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


def _rebuilt(pair: AdjPair, keep_dst: torch.Tensor) -> AdjPair:
    """``pair`` with only the in-edges of ``keep_dst`` (bool per destination), rebuilt from
    coordinates: what drop_rows and restrict_rows did before they masked the CSR in place."""
    from graphrec_dist.models.sparse import to_torch_csr_tensor

    coo = pair.adj_t.to_sparse_coo().coalesce()
    dst, src = coo.indices()
    kept = keep_dst[dst]
    edge_index, values = torch.stack([src[kept], dst[kept]]), coo.values()[kept]
    num_dst, num_src = pair.adj_t.shape
    return AdjPair(to_torch_csr_tensor(edge_index.flip(0), values, size=(num_dst, num_src)),
                   to_torch_csr_tensor(edge_index, values, size=(num_src, num_dst)))


def _same_csr(a: AdjPair, b: AdjPair) -> bool:
    return all(torch.equal(x.crow_indices(), y.crow_indices()) and torch.equal(x.col_indices(), y.col_indices())
               and torch.equal(x.values(), y.values()) for x, y in zip(a, b))


def test_drop_and_restrict_rows_equal_a_rebuild_from_coordinates() -> None:
    # Masking both CSR orientations must give the very tensors a rebuild gives (bit for bit), so
    # the full-graph step's outputs do not change with it.
    from graphrec_dist.models.sparse import drop_rows, restrict_rows

    gen = torch.Generator().manual_seed(0)
    num_src, num_dst, n = 40, 30, 300
    edge_index = torch.stack([torch.randint(num_src, (n,), generator=gen), torch.randint(num_dst, (n,), generator=gen)])
    pair = bipartite_pair(edge_index, torch.rand(n, generator=gen), num_src, num_dst, "mean", torch.device("cpu"))
    new = torch.rand(num_dst, generator=gen) < 0.3
    assert _same_csr(drop_rows(pair, new), _rebuilt(pair, ~new))
    rows = torch.tensor([0, 3, 4, 17, 29])
    keep = torch.zeros(num_dst, dtype=torch.bool)
    keep[rows] = True
    sub = restrict_rows(pair, rows)
    assert _same_csr(sub, _rebuilt(pair, keep))
    x = torch.randn(num_src, 4, generator=gen)
    assert torch.equal(SpMM.apply(x, *sub), torch.sparse.mm(_rebuilt(pair, keep).adj_t, x))


def test_row_totals_aggregate_a_shared_source_like_the_matmul() -> None:
    # A relation whose sources all carry one vector (users without id embeddings, first layer) is
    # aggregated from its row totals; it must equal the matmul, dropped rows included, gradient too.
    from graphrec_dist.models.sage_encoder import WeightedSAGEConv
    from graphrec_dist.models.sparse import RowTotals, drop_rows, row_totals

    gen = torch.Generator().manual_seed(1)
    num_src, num_dst, n = 50, 20, 200
    src, dst = torch.randint(num_src, (n,), generator=gen), torch.randint(num_dst - 3, (n,), generator=gen)
    edge_index = torch.stack([src, dst])
    new = torch.rand(num_dst, generator=gen) < 0.3
    for aggr in ("mean", "sum"):
        weight = torch.rand(n, generator=gen) + 0.5
        pair = bipartite_pair(edge_index, weight, num_src, num_dst, aggr, torch.device("cpu"))
        conv = WeightedSAGEConv(4, 3, aggr=aggr)
        shared = torch.randn(1, 4, generator=gen, requires_grad=True)
        dst_x = torch.randn(num_dst, 4, generator=gen)
        outs, grads = [], []
        for adj in (drop_rows(pair, new), RowTotals(row_totals(pair).total.masked_fill(new, 0.0))):
            out = conv((shared.expand(num_src, -1), dst_x), adj)
            outs.append(out)
            grads.append(torch.autograd.grad(out.square().sum(), shared)[0])
        assert torch.allclose(outs[0], outs[1], atol=1e-5)
        assert torch.allclose(grads[0], grads[1], atol=1e-4)
        no_messages = new.clone()
        no_messages[-3:] = True  # the last three destinations have no in-edges at all
        expected = conv.lin_l(torch.zeros(1, 4)) + conv.lin_r(dst_x[no_messages])
        assert torch.allclose(outs[1][no_messages], expected, atol=1e-6)


def test_spmm_under_bf16_autocast_multiplies_and_differentiates_in_float32() -> None:
    """Under autocast (CUDA's train.amp; debug.amp_on_cpu here) the product and its backward run
    in the adjacency's float32 on x as given, and x's gradient comes back in x's dtype."""
    edge_index = torch.tensor([SRC, DST])
    pair = adjacency_pair(edge_index, torch.tensor(WEIGHT), NUM_NODES, torch.device("cpu"))
    x = _x(NUM_NODES).detach().float()
    grads = {}
    for dtype in (torch.float32, torch.bfloat16):
        xin = x.to(dtype).detach().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = SpMM.apply(xin, pair.adj_t, pair.adj)
        assert out.dtype == torch.float32
        (out * torch.arange(out.numel()).view_as(out)).sum().backward()
        assert xin.grad.dtype == dtype
        grads[dtype] = (out.detach(), xin.grad.float())
    want = torch.sparse.mm(pair.adj_t, x)
    assert torch.equal(grads[torch.float32][0], want)  # float32 x: the float32 product, exactly
    # bf16 x: only x's own rounding, not the edge weights' (bf16 keeps ~3 digits)
    assert torch.allclose(grads[torch.bfloat16][0], torch.sparse.mm(pair.adj_t, x.bfloat16().float()), atol=1e-6)
    assert torch.allclose(grads[torch.bfloat16][1], grads[torch.float32][1], rtol=1e-2)


def test_csr_rows_gives_every_entry_of_the_rows_in_csr_order_for_torch_and_numpy() -> None:
    """One helper for the path term (torch) and the evaluator's and export's masks (numpy)."""
    indptr = torch.tensor([0, 2, 2, 5, 6])  # row 1 is empty
    rows = torch.tensor([3, 1, 0, 2, 0])  # any order, repeats
    want_owner = [0, 2, 2, 3, 3, 3, 4, 4]
    want_entry = [5, 0, 1, 2, 3, 4, 0, 1]
    owner, entry = csr_rows(indptr, rows)
    assert owner.tolist() == want_owner and entry.tolist() == want_entry
    owner_np, entry_np = csr_rows(indptr.numpy(), rows.numpy().astype("int32"))
    assert owner_np.dtype == entry_np.dtype == "int64"
    assert owner_np.tolist() == want_owner and entry_np.tolist() == want_entry
    empty = csr_rows(indptr.numpy(), rows.numpy()[:0])
    assert empty[0].shape == empty[1].shape == (0,)
