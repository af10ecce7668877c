"""Sparse-dense products for full-graph message passing: a CSR adjacency in both orientations and a
matmul whose backward uses the stored transpose.

torch's CSR ``sparse.mm`` was several times faster than torch_sparse's ``spmm`` on one CPU thread at
Goodbooks scale (4.9M edges, 64 dims) in a one-off timing, and torch's own CSR backward
rebuilds the transpose on every call; :class:`SpMM` multiplies by a transpose built once instead.
Used by LightGCN and by full-graph GraphSAGE.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple, Optional

import numpy as np
import torch
from torch_geometric.utils import scatter, to_torch_csr_tensor as _to_csr


def to_torch_csr_tensor(edge_index: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PyG's ``to_torch_csr_tensor`` without torch's per-call warnings ("CSR support is in beta",
    "invariant checks are implicitly disabled"), which a full-graph run would print every step."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        return _to_csr(edge_index, values, size=size)


class AdjPair(NamedTuple):
    """The normalised adjacency as PyG's ``adj_t`` (messages flow src -> dst) and its transpose."""

    adj_t: torch.Tensor  # torch sparse CSR [N, N]: row = destination
    adj: torch.Tensor  # torch sparse CSR [N, N]: row = source, for the backward pass


class SpMM(torch.autograd.Function):
    """``adj_t @ x`` whose backward is ``adj @ grad``: torch's own CSR backward rebuilds the
    transpose on every call, which made a step 10-30x slower than the forward pass.

    Both products run in the adjacency's dtype (float32) with autocast off, whatever dtype ``x``
    and the incoming gradient have: under bf16 autocast the sparse kernels would otherwise get
    a float32 CSR with a bf16 dense side (the CPU's MKL kernel has no bf16 at all, cuSPARSE takes
    one dtype), and casting the CSR instead would round every edge weight on every call. autograd
    casts ``x``'s gradient back to ``x``'s dtype."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, adj_t: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        with torch.autocast(x.device.type, enabled=False):
            return torch.sparse.mm(adj_t, x.to(adj_t.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        with torch.autocast(grad.device.type, enabled=False):
            return torch.sparse.mm(ctx.adj, grad.to(ctx.adj.dtype)), None, None


class PartialAdj(NamedTuple):
    """A relation from users to another node type under ``dist.sharding=users``: ``pair`` holds this
    rank's users only, with values normalised over all users, so ``pair.adj_t @ x`` is this rank's
    share of the aggregate and the sum over ranks (``ctx``) is the exact aggregate."""

    pair: AdjPair
    ctx: object  # distributed.DistContext (not imported: this module stays free of process groups)


class RowTotals(NamedTuple):
    """A relation whose sources all carry one vector ``v`` (a node type without id embeddings, at
    the first layer): the aggregation at each destination is ``total[dst] * v``, with ``total`` the
    sum of the destination's in-edge values (1 for a mean over at least one edge, else 0). Computed
    without touching an edge: at Goodbooks scale the user -> book relation is 4.9M edges whose
    product was most of a full-graph step, and it carried nothing but which books have ratings."""

    total: torch.Tensor  # [num_dst]


def row_totals(pair: AdjPair) -> RowTotals:
    """The :class:`RowTotals` of ``pair`` (summed in float64: a row can hold thousands of values)."""
    crow, val = pair.adj_t.crow_indices(), pair.adj_t.values()
    num_dst = pair.adj_t.shape[0]
    dst = torch.repeat_interleave(torch.arange(num_dst, device=crow.device), crow[1:] - crow[:-1],
                                  output_size=val.numel())
    total = torch.zeros(num_dst, dtype=torch.float64, device=val.device).index_add_(0, dst, val.double())
    return RowTotals(total.to(val.dtype))


def csr_rows(indptr: torch.Tensor | np.ndarray, rows: torch.Tensor | np.ndarray) -> tuple:
    """(position in ``rows``, entry index) of every CSR entry of ``rows``, in CSR order, without a
    Python loop. Torch tensors in, torch tensors out; numpy arrays in (the evaluator's and the
    export's masks), int64 numpy arrays out."""
    if isinstance(indptr, np.ndarray):
        owner, entry = csr_rows(torch.from_numpy(np.ascontiguousarray(indptr, dtype=np.int64)),
                                torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64)))
        return owner.numpy(), entry.numpy()
    starts, lengths = indptr[rows], indptr[rows + 1] - indptr[rows]
    owner = torch.repeat_interleave(torch.arange(len(rows), device=indptr.device), lengths)
    offsets = torch.repeat_interleave(starts - (torch.cumsum(lengths, 0) - lengths), lengths)
    return owner, torch.arange(len(owner), device=indptr.device) + offsets


def adjacency_pair(edge_index: torch.Tensor, edge_weight: torch.Tensor, num_nodes: int,
                   device: torch.device) -> AdjPair:
    """Both CSR orientations on ``device``. A fused sparse-dense matmul per layer: the edge_index
    path would materialise one message per edge (E x dim floats), gigabytes at Goodbooks scale."""
    size = (num_nodes, num_nodes)
    weight = edge_weight.float()
    adj_t = to_torch_csr_tensor(edge_index.flip(0), weight, size=size)
    adj = to_torch_csr_tensor(edge_index, weight, size=size)
    return AdjPair(adj_t.to(device), adj.to(device))


# A destination's (in-degree, weight total) over every source, where a rank sees only some sources
# (dist.sharding=users: a book's raters on other ranks); None = count the edges given.
DstStats = Optional[tuple[torch.Tensor, torch.Tensor]]


def _dst_count(dst: torch.Tensor, num_dst: int, stats: DstStats) -> torch.Tensor:
    if stats is not None:
        return stats[0].to(device=dst.device, dtype=torch.float32)
    return scatter(torch.ones(dst.numel(), device=dst.device), dst, 0, dim_size=num_dst, reduce="sum")


def normalised_weight(edge_weight: Optional[torch.Tensor], dst: torch.Tensor, num_dst: int,
                      stats: DstStats = None) -> Optional[torch.Tensor]:
    """Edge weights scaled to average 1 over each destination's in-edges (None stays None)."""
    if edge_weight is None:
        return None
    w = edge_weight.to(torch.float32)
    if stats is None:
        total = scatter(w, dst, 0, dim_size=num_dst, reduce="sum")
    else:
        total = stats[1].to(device=w.device, dtype=torch.float32)
    count = _dst_count(dst, num_dst, stats)
    return w * count[dst] / total[dst].clamp_min(1e-12)


def weighted_mean_values(edge_index: torch.Tensor, weight: Optional[torch.Tensor], num_dst: int,
                         aggr: str, stats: DstStats = None) -> torch.Tensor:
    """Edge values that make ``adj_t @ x`` GraphSAGE's (weighted) ``aggr`` of the sources.

    ``sum``: the weights renormalised to average 1 over each destination's in-edges (1 without
    weights); ``mean``: those divided by the destination's in-degree, i.e. a weighted mean.
    ``stats``: the destinations' in-degrees and weight totals over all sources, when
    ``edge_index`` holds only some (the values are then one rank's share of the aggregate).
    """
    dst = edge_index[1]
    w = normalised_weight(weight, dst, num_dst, stats)
    if w is None:
        w = torch.ones(dst.numel(), dtype=torch.float32, device=dst.device)
    if aggr == "mean":
        w = w / _dst_count(dst, num_dst, stats)[dst].clamp_min(1.0)
    elif aggr != "sum":
        raise ValueError(f"a sparse matmul computes sum or mean aggregation, not {aggr!r}")
    return w


def bipartite_pair(edge_index: torch.Tensor, weight: Optional[torch.Tensor], num_src: int, num_dst: int,
                   aggr: str, device: torch.device, stats: DstStats = None) -> AdjPair:
    """An :class:`AdjPair` of a (possibly bipartite) relation: ``adj_t`` is [num_dst, num_src]
    (``stats``: see :func:`weighted_mean_values`)."""
    values = weighted_mean_values(edge_index, weight, num_dst, aggr, stats)
    adj_t = to_torch_csr_tensor(edge_index.flip(0), values, size=(num_dst, num_src))
    adj = to_torch_csr_tensor(edge_index, values, size=(num_src, num_dst))
    return AdjPair(adj_t.to(device), adj.to(device))


def restrict_rows(pair: AdjPair, rows: torch.Tensor, keep: float = 1.0,
                  drop: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> AdjPair:
    """``pair`` with only the destination ``rows`` (sorted, unique) keeping their in-edges; the
    shape stays the same, so a layer computes those rows exactly and the rest from no messages.
    A step that needs a few destinations (a batch's users) then costs their edges, not all.

    ``keep`` < 1 keeps each of those edges with that probability (torch's global RNG); ``drop``
    = (destinations, sources) removes those edges. Either way each row's remaining values are
    rescaled to the row's original total, so a mean stays a mean over what is left.
    """
    crow, col, val = pair.adj_t.crow_indices(), pair.adj_t.col_indices(), pair.adj_t.values()
    owner, idx = csr_rows(crow, rows)
    total = len(idx)
    num_dst, num_src = pair.adj_t.shape
    dst = rows[owner]
    src, values = col[idx], val[idx]
    kept = torch.ones(total, dtype=torch.bool, device=crow.device)
    if keep < 1.0:
        kept &= torch.rand(total, device=crow.device) < keep
    if drop is not None:
        kept &= ~torch.isin(dst * num_src + src, drop[0] * num_src + drop[1])
    if not bool(kept.all()):
        before = torch.zeros(num_dst, dtype=values.dtype, device=values.device).index_add_(0, dst, values)
        dst, src, values = dst[kept], src[kept], values[kept]
        after = torch.zeros_like(before).index_add_(0, dst, values)
        values = values * (before[dst] / after[dst])
    # The gathered entries are already in CSR order (rows sorted, columns sorted within a row):
    # adj_t needs no sort, and its transpose one stable sort by source.
    order = torch.sort(src, stable=True).indices
    return AdjPair(_csr(dst, src, values, (num_dst, num_src)),
                   _csr(src[order], dst[order], values[order], (num_src, num_dst)))


def _csr(row: torch.Tensor, col: torch.Tensor, val: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A CSR tensor from entries already sorted by (row, col)."""
    crow = torch.zeros(size[0] + 1, dtype=torch.int64, device=row.device)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=size[0]), 0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        return torch.sparse_csr_tensor(crow, col, val, size=size)


def drop_rows(pair: AdjPair, rows: torch.Tensor) -> AdjPair:
    """``pair`` without the in-edges of the destinations where ``rows`` (bool [num_dst]) is True:
    those rows then get no messages, as a node without such edges would (a new item's ratings)."""
    return _mask_dst(pair, rows.to(pair.adj_t.crow_indices().device), keep_marked=False)


def _mask_dst(pair: AdjPair, marked: torch.Tensor, keep_marked: bool) -> AdjPair:
    """``pair`` keeping only the in-edges of destinations where ``marked`` is ``keep_marked``.

    Both CSR orientations are masked in place of being rebuilt from coordinates: a coalesced CSR
    stays sorted under a mask, so this gives the same tensors as a rebuild without its two sorts
    (run every full-graph step, they were a large share of its index work).
    """
    keep_dst = marked if keep_marked else ~marked
    crow_t, col_t, val_t = pair.adj_t.crow_indices(), pair.adj_t.col_indices(), pair.adj_t.values()
    kept_t = torch.repeat_interleave(keep_dst, crow_t[1:] - crow_t[:-1], output_size=col_t.numel())
    crow, col, val = pair.adj.crow_indices(), pair.adj.col_indices(), pair.adj.values()
    kept = keep_dst[col]
    return AdjPair(_masked_csr(crow_t, col_t, val_t, kept_t, pair.adj_t.shape),
                   _masked_csr(crow, col, val, kept, pair.adj.shape))


def _masked_csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, kept: torch.Tensor,
                size: torch.Size) -> torch.Tensor:
    """The CSR tensor (crow, col, val) with only the entries where ``kept`` is True."""
    before = torch.cat([crow.new_zeros(1), torch.cumsum(kept, 0, dtype=crow.dtype)])
    idx = kept.nonzero().squeeze(1)  # once for both gathers: a boolean index runs nonzero each time
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        return torch.sparse_csr_tensor(before[crow], col[idx], val[idx], size=tuple(size))
