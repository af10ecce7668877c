"""Layer-wise neighbour sampling into per-layer blocks, for ``train.mode=sampled`` (``train.sampler=blocks``).

PyG's ``LinkNeighborLoader`` returns one subgraph, the union of every hop, and the model then runs
every layer over every node of it: at fanout [15, 10] on Graph3 the last layer computes ~60k
node outputs to use the ~6k of the batch. Here the sampling follows the model's layers instead
(as DGL's blocks do): the last layer's destinations are the batch's users and books, each layer's
sources are the next lower layer's destinations, and a layer computes only the rows the layer
above reads. The sampler is a handful of vectorised tensor operations per edge type (no Python
loop over nodes): a destination with at most ``k`` in-edges keeps them all, one with more draws
``k`` of them uniformly with replacement (GraphSAGE's own fixed-size sampling).

Each block is, per edge type, a CSR adjacency whose values make ``adj_t @ x`` the (weighted)
mean over the sampled neighbours, with the transpose cached for the backward pass
(:class:`graphrec_dist.models.sparse.SpMM`). Its shape is [all nodes of the destination type at
that layer, sources]: the destinations come first in every node list, so rows past them simply
receive no messages and are dropped after the layer.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from torch_geometric.data import HeteroData

from graphrec_dist.data.bundle import RATES, REV_RATES
from graphrec_dist.models.sparse import AdjPair, weighted_mean_values

EdgeType = tuple[str, str, str]


@dataclass
class Blocks:
    """One batch's sampled computation: per layer (first to last) the adjacency per edge type, and
    per layer the number of nodes of each type it reads (its sources; destinations first)."""

    n_id: dict[str, torch.Tensor]  # global ids of the first layer's input nodes, per type
    adj: list[dict[EdgeType, AdjPair]]  # per layer
    num_out: list[dict[str, int]]  # per layer: rows of each type the layer's output keeps


class _InEdges:
    """One edge type's in-edges grouped by destination (CSR over destinations)."""

    def __init__(self, edge_index: torch.Tensor, weight: Optional[torch.Tensor], num_dst: int):
        order = torch.argsort(edge_index[1], stable=True)
        self.src = edge_index[0, order].contiguous()
        self.weight = None if weight is None else weight[order].float().contiguous()
        counts = torch.bincount(edge_index[1], minlength=num_dst)
        self.indptr = torch.zeros(num_dst + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=self.indptr[1:])

    def sample(self, dst: torch.Tensor, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(edge positions, destination row) of up to ``k`` in-edges of each node in ``dst``,
        grouped by row in row order (so the rows need no sort)."""
        start = self.indptr[dst]
        deg = self.indptr[dst + 1] - start
        every = deg <= k if k >= 0 else torch.ones_like(deg, dtype=torch.bool)
        count = torch.where(every, deg, torch.full_like(deg, max(k, 0)))
        row = torch.repeat_interleave(torch.arange(len(dst)), count)
        # Slot j of a row: its j-th in-edge when the row keeps them all, else a uniform draw.
        slot = torch.arange(len(row)) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        drawn = (torch.rand(len(row), generator=gen) * deg[row]).long()
        offset = torch.where(every[row], slot, torch.minimum(drawn, deg[row] - 1))
        return start[row] + offset, row


class BlockSampler:
    """Samples :class:`Blocks` for a model's ``layer_types`` (one list of edge types per layer)."""

    def __init__(self, graph: HeteroData, layer_types: list[list[EdgeType]], fanouts: list[int],
                 use_weight: bool, aggr: str):
        if aggr not in ("mean", "sum"):
            raise ValueError(f"block sampling computes mean or sum aggregation, not {aggr!r}")
        self.layer_types = layer_types
        # num_neighbors[0] is the first hop from the seeds, i.e. the last layer (PyG's order).
        self.fanouts = [fanouts[min(len(layer_types) - 1 - i, len(fanouts) - 1)] for i in range(len(layer_types))]
        self.aggr = aggr
        self.num_nodes = {nt: int(graph[nt].num_nodes) for nt in graph.node_types}
        used = {et for ets in layer_types for et in ets}
        self.in_edges = {et: _InEdges(graph[et].edge_index, graph[et].get("edge_weight") if use_weight else None,
                                      self.num_nodes[et[2]]) for et in used}
        # Global id -> local position, per type; -1 = not in the current node list (reset after use).
        self._local = {nt: torch.full((n,), -1, dtype=torch.int64) for nt, n in self.num_nodes.items()}

    def sample(self, seeds: dict[str, torch.Tensor], gen: torch.Generator,
               exclude: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> Blocks:
        """Blocks whose last layer outputs the ``seeds`` (unique global ids per type, in that order).
        ``exclude`` = (users, books): those user-book pairs are never sampled (the batch's own
        positives, ``train.exclude_seed_edges``)."""
        dst = {nt: ids for nt, ids in seeds.items()}
        adj: list[dict[EdgeType, AdjPair]] = []
        num_out: list[dict[str, int]] = []
        for layer in range(len(self.layer_types) - 1, -1, -1):
            src, layer_adj = self._layer(layer, dst, gen, exclude)
            adj.append(layer_adj)
            num_out.append({nt: len(ids) for nt, ids in dst.items()})
            dst = src
        return Blocks(n_id=dst, adj=adj[::-1], num_out=num_out[::-1])

    def _layer(self, layer: int, dst: dict[str, torch.Tensor], gen: torch.Generator,
               exclude: Optional[tuple[torch.Tensor, torch.Tensor]]):
        ets = self.layer_types[layer]
        types = {t for et in ets for t in (et[0], et[2])} | set(dst)
        nodes = {nt: [dst.get(nt, torch.zeros(0, dtype=torch.int64))] for nt in types}
        sampled = {}
        for et in ets:
            if et[2] not in dst or len(dst[et[2]]) == 0:
                continue
            edges = self.in_edges[et]
            pos, row = edges.sample(dst[et[2]], self.fanouts[layer], gen)
            src_ids = edges.src[pos]
            weight = None if edges.weight is None else edges.weight[pos]
            if exclude is not None and et in (RATES, REV_RATES):
                users, books = (src_ids, dst[et[2]][row]) if et == RATES else (dst[et[2]][row], src_ids)
                width = self.num_nodes["book"]
                keep = ~torch.isin(users * width + books, exclude[0] * width + exclude[1])
                src_ids, row, weight = src_ids[keep], row[keep], None if weight is None else weight[keep]
            sampled[et] = (src_ids, row, weight)
            nodes[et[0]].append(src_ids)
        src = {nt: self._node_list(nt, parts) for nt, parts in nodes.items()}  # fills the lookups
        layer_adj = {}
        for et in ets:
            n_dst, n_src = len(src[et[2]]), len(src[et[0]])
            if et not in sampled:
                empty = torch.zeros(2, 0, dtype=torch.int64)
                layer_adj[et] = _pair(empty, torch.zeros(0), n_dst, n_src)
                continue
            src_ids, row, weight = sampled[et]
            edge_index = torch.stack([self._local[et[0]][src_ids], row])
            values = weighted_mean_values(edge_index, weight, n_dst, self.aggr)
            layer_adj[et] = _pair(edge_index, values, n_dst, n_src)
        for nt, ids in src.items():  # clear the lookups for the next layer or batch
            self._local[nt][ids] = -1
        return src, layer_adj

    def _node_list(self, nt: str, parts: list[torch.Tensor]) -> torch.Tensor:
        """The destinations (first, in order) then every new source once."""
        first = parts[0]
        table = self._local[nt]
        table[first] = torch.arange(len(first))
        rest = torch.cat(parts[1:]) if len(parts) > 1 else first[:0]
        new = torch.unique(rest[table[rest] < 0])
        table[new] = torch.arange(len(first), len(first) + len(new))
        return torch.cat([first, new])


def _csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, size: tuple[int, int],
         rows_sorted: bool = False) -> torch.Tensor:
    """A CSR matrix from (row, col, value) triples without PyG's coalescing sort: at most one
    stable argsort of the rows (a neighbour drawn twice stays two entries, which the product adds)."""
    if not rows_sorted:
        order = torch.argsort(rows, stable=True)
        cols, values = cols[order], values[order]
    crow = torch.zeros(size[0] + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(rows, minlength=size[0]), 0, out=crow[1:])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, cols, values.float(), size=size, check_invariants=False)


def _pair(edge_index: torch.Tensor, values: torch.Tensor, n_dst: int, n_src: int) -> AdjPair:
    """``adj_t`` from destination-ordered edges, and its transpose for the backward pass."""
    src, dst = edge_index
    return AdjPair(_csr(dst, src, values, (n_dst, n_src), rows_sorted=True), _csr(src, dst, values, (n_src, n_dst)))
