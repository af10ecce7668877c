"""The heterogeneous GraphSAGE encoder of ``graphsage``: id embeddings, ``to_hetero`` SAGE layers,
and the adjacencies they run on (the recommender around it: ``models/graphsage.py``).


Input: a learnable id embedding per node type. Each layer is a one-conv module converted by
``torch_geometric.nn.to_hetero`` (one SAGEConv per edge type, relations merged by
``model.hetero_aggr``); skip, normalisation, activation and dropout are applied per node type
around it. The last layer keeps only edge types whose destination is ``user`` or ``book`` (and
earlier layers only what reaches those), so no parameter is left without a gradient under DDP.

Edge weights: SAGEConv has no ``edge_weight`` argument, so :class:`WeightedSAGEConv` scales each
message by the edge weight renormalised to average 1 over the destination's neighbours present
(sampled in training, all of them at inference). With mean aggregation that is exactly the
weighted mean; with sum/max it rescales messages without changing their total weight.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import SAGEConv, to_hetero
from torch_geometric.nn.conv import MessagePassing

# torch-sparse is the optional `sparse` extra (pyproject): PyG's stand-ins let the package import
# without it, and say "requires 'torch-sparse'" when graphsage first builds an adjacency.
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor, torch_sparse

from graphrec_dist.config import ModelConfig
from graphrec_dist.data.bundle import BOOK, USER
from graphrec_dist.distributed import DistContext, shard, sum_over_ranks
from graphrec_dist.models.hetero_layer import fused_forward
from graphrec_dist.models.sparse import AdjPair, PartialAdj, RowTotals, SpMM, bipartite_pair, normalised_weight

EdgeType = tuple[str, str, str]


class WeightedSAGEConv(SAGEConv):
    """SAGEConv whose messages are scaled by (renormalised) edge weights.

    Takes ``edge_index`` + raw ``edge_weight`` (renormalised here), a SparseTensor ``adj_t`` whose
    values are already renormalised (sampled training, inference), or an :class:`AdjPair` whose
    values already include the aggregation (full-graph training: a CSR matmul with a cached
    transpose for the backward), or the :class:`RowTotals` of a relation whose sources all carry
    one vector. No per-edge message is ever materialised on the last three.
    """

    # PyG swaps a conv class's `propagate` for one generated from its own signature. Once a plain
    # SAGEConv has been built in the process, this subclass would inherit SAGEConv's generated
    # propagate (no edge_weight); owning the generic one makes PyG generate (or fall back to) ours.
    propagate = MessagePassing.propagate

    def forward(self, x, edge_index, edge_weight: Optional[Tensor] = None) -> Tensor:  # type: ignore[override]
        if isinstance(x, Tensor):
            x = (x, x)
        out = self.lin_l(self.neighbours(x[0], x[1].size(0), edge_index, edge_weight))
        if self.root_weight:
            out = out + self.lin_r(x[1])
        return out

    def neighbours(self, x_src: Tensor, num_dst: int, edge_index, edge_weight: Optional[Tensor] = None) -> Tensor:
        """The aggregate of ``x_src`` at each of ``num_dst`` destinations (before ``lin_l``)."""
        if isinstance(edge_index, RowTotals):  # every source row is the same vector
            return edge_index.total.unsqueeze(1) * x_src[:1]
        if isinstance(edge_index, PartialAdj):  # this rank's users' share, summed over ranks
            return sum_over_ranks(SpMM.apply(x_src, edge_index.pair.adj_t, edge_index.pair.adj), edge_index.ctx)
        if isinstance(edge_index, AdjPair):
            return SpMM.apply(x_src, edge_index.adj_t, edge_index.adj)
        # Only x_src is read by message(); the destination side is a placeholder of the right size.
        x = (x_src, x_src.new_empty(num_dst, 0))
        if isinstance(edge_index, SparseTensor):
            # propagate_type: (x: OptPairTensor, edge_weight: OptTensor)
            return self.propagate(edge_index, x=x, edge_weight=None)
        w = normalised_weight(edge_weight, edge_index[1], num_dst)
        return self.propagate(edge_index, x=x, edge_weight=w, size=(x_src.size(0), num_dst))

    def message(self, x_j: Tensor, edge_weight: Optional[Tensor]) -> Tensor:  # type: ignore[override]
        return x_j if edge_weight is None else x_j * edge_weight.view(-1, 1)

    def message_and_aggregate(self, adj_t: SparseTensor, x) -> Tensor:  # type: ignore[override]
        # SAGEConv drops the adjacency values here; keep them (they are the renormalised weights),
        # and their float32: torch_sparse's CUDA kernels read the values as x's dtype, bf16 under autocast.
        value = adj_t.storage.value()
        return torch_sparse.matmul(adj_t, x[0] if value is None else x[0].to(value.dtype), reduce=self.aggr)


class _ConvLayer(nn.Module):
    """One homogeneous SAGE conv, the unit that ``to_hetero`` copies per edge type."""

    def __init__(self, in_dim: int, out_dim: int, aggr: str):
        super().__init__()
        self.conv = WeightedSAGEConv(in_dim, out_dim, aggr=aggr)

    def forward(self, x: Tensor, edge_index, edge_weight: Optional[Tensor] = None) -> Tensor:
        return self.conv(x, edge_index, edge_weight)


def layer_edge_types(edge_types: list[EdgeType], num_layers: int,
                     targets: tuple[str, ...] = (USER, BOOK)) -> list[list[EdgeType]]:
    """Per layer, the edge types whose output can still reach ``targets`` at the last layer."""
    needed = set(targets)
    per_layer: list[list[EdgeType]] = []
    for _ in range(num_layers):
        keep = [et for et in edge_types if et[2] in needed]
        per_layer.append(keep)
        needed = needed | {et[0] for et in keep}
    return per_layer[::-1]


class HeteroSAGE(nn.Module):
    """Embeddings -> L to_hetero SAGE layers -> user/book output embeddings."""

    def __init__(self, num_nodes: dict[str, int], edge_types: list[EdgeType], model_cfg: ModelConfig,
                 user_rows: Optional[slice] = None, seed: int = 0):
        """``user_rows``: under ``dist.sharding=users``, the global rows of the users in
        ``num_nodes`` (their table is drawn row block by row block from ``seed``, the same for any
        world size, and not from the global RNG, which must stay in step on every rank)."""
        super().__init__()
        m = model_cfg
        self.layer_types = layer_edge_types(list(edge_types), m.num_layers)
        used = sorted({t for ets in self.layer_types for et in ets for t in (et[0], et[2])} | {USER, BOOK})
        # Without user id embeddings every user starts from one shared learned vector, and a user
        # is what their history and attributes say: fewer parameters, and a user unseen in
        # training is scored like any other.
        self.num_nodes = {nt: num_nodes[nt] for nt in used}
        self.shared = set() if m.user_id_embedding else {USER}
        # A sharded user table is built empty (nn.Embedding would draw its own init from the global
        # RNG, as many numbers as the rank has users) and filled by init_rows_ below.
        sharded_users = user_rows is not None and USER not in self.shared
        self.emb = nn.ModuleDict({
            nt: nn.Embedding(num_nodes[nt], m.emb_dim, _weight=torch.empty(num_nodes[nt], m.emb_dim))
            if nt == USER and sharded_users else nn.Embedding(1 if nt in self.shared else num_nodes[nt], m.emb_dim)
            for nt in used})
        for nt, e in self.emb.items():
            if nt == USER and sharded_users:
                init_rows_(e.weight, user_rows.start, seed, std=0.1)
            else:
                nn.init.normal_(e.weight, std=0.1)
        # The input of a user or book the model has no trained id embedding for (model.id_dropout).
        self.unknown = nn.ParameterDict({nt: nn.Parameter(torch.randn(m.emb_dim) * 0.1)
                                         for nt in (USER, BOOK) if nt not in self.shared}
                                        if m.id_dropout > 0 else {})
        self.dropout, self.skip = m.dropout, m.skip
        # model.fused_layers: the same parameters, fewer dense FLOPs (models/hetero_layer.py).
        self.fused = m.fused_layers and m.hetero_aggr in ("sum", "mean")
        self.hetero_aggr, self.linear_aggr = m.hetero_aggr, m.aggr in ("sum", "mean")
        self.layers = nn.ModuleList()
        self.skips = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, ets in enumerate(self.layer_types):
            in_dim = m.emb_dim if i == 0 else m.hidden_dim
            types = sorted({t for et in ets for t in (et[0], et[2])})
            dsts = sorted({et[2] for et in ets})
            with warnings.catch_warnings():
                # Node types that are only sources in the last layer are dropped on purpose.
                warnings.filterwarnings("ignore", message="There exist node types")
                self.layers.append(to_hetero(_ConvLayer(in_dim, m.hidden_dim, m.aggr), (types, ets),
                                             aggr=m.hetero_aggr))
            proj = m.skip and in_dim != m.hidden_dim
            self.skips.append(nn.ModuleDict({t: nn.Linear(in_dim, m.hidden_dim, bias=False) for t in dsts}
                                            if proj else {}))
            last = i == len(self.layer_types) - 1
            self.norms.append(nn.ModuleDict({t: _norm(m.norm, m.hidden_dim) for t in dsts}
                                            if m.norm != "none" and not last else {}))

    def input_embeddings(self, n_id: dict[str, Tensor], new: Optional[dict[str, Tensor]] = None) -> dict[str, Tensor]:
        """Layer-0 features of the nodes ``n_id`` (per node type) of a sampled batch; nodes whose
        global id is True in ``new`` (bool per node of the type) get the unknown vector."""
        x = {nt: self.emb[nt](torch.zeros_like(n_id[nt]) if nt in self.shared else n_id[nt])
             for nt in self.emb.keys() if nt in n_id}
        for nt, mask in (new or {}).items():
            if nt in x and nt in self.unknown:
                x[nt] = torch.where(mask[n_id[nt]].unsqueeze(1), self.unknown[nt].unsqueeze(0), x[nt])
        return x

    def all_embeddings(self, new: Optional[dict[str, Tensor]] = None) -> dict[str, Tensor]:
        """Layer-0 features of every node, per node type (``new`` as in ``input_embeddings``)."""
        x = {nt: e.weight.expand(self.num_nodes[nt], -1) if nt in self.shared else e.weight
             for nt, e in self.emb.items()}
        for nt, mask in (new or {}).items():
            if nt in self.unknown:
                x[nt] = torch.where(mask.unsqueeze(1), self.unknown[nt].unsqueeze(0), x[nt])
        return x

    def new_node_input(self, nt: str, n: int) -> Tensor:
        """[n, emb_dim] layer-0 features of ``n`` nodes of type ``nt`` the model has never seen:
        the shared vector, the learned unknown vector, or zeros (trained without id_dropout)."""
        if nt in self.shared:
            return self.emb[nt].weight.expand(n, -1)
        if nt in self.unknown:
            return self.unknown[nt].unsqueeze(0).expand(n, -1)
        return self.emb[nt].weight.new_zeros(n, self.emb[nt].weight.shape[1])

    def layer(self, i: int, x: dict[str, Tensor], edge_index: dict, edge_weight: dict) -> dict[str, Tensor]:
        """Layer ``i`` on node features ``x``: conv, skip, then (not last) norm, ReLU, dropout."""
        ets = self.layer_types[i]
        ei = {et: edge_index[et] for et in ets}
        if self.fused and not edge_weight:
            h = fused_forward(self.layers[i], ets, x, ei, self.hetero_aggr, self.linear_aggr)
        else:
            h = self.layers[i](x, ei, {et: edge_weight.get(et) for et in ets})
        last = i == len(self.layer_types) - 1
        out = {}
        for nt, hv in h.items():
            if hv is None:  # a node type that is only a source in this layer
                continue
            if self.skip:
                hv = hv + (self.skips[i][nt](x[nt]) if nt in self.skips[i] else x[nt])
            if not last:
                if nt in self.norms[i]:
                    hv = self.norms[i][nt](hv)
                hv = F.dropout(F.relu(hv), p=self.dropout, training=self.training)
            out[nt] = hv
        return out

    def forward(self, x: dict[str, Tensor], edge_index: dict, edge_weight: dict) -> dict[str, Tensor]:
        for i in range(len(self.layers)):
            x = self.layer(i, x, edge_index, edge_weight)
        return x


INIT_BLOCK = 4096  # rows per seeded block of a sharded table's initial values


@torch.no_grad()
def init_rows_(table: Tensor, start: int, seed: int, std: float) -> None:
    """N(0, std) rows for the global rows ``start..`` of a table, drawn per block of INIT_BLOCK
    global rows from a generator seeded by (seed, block): every row gets the same value whichever
    rank holds it."""
    stop = start + table.shape[0]
    for block in range(start // INIT_BLOCK, -(-stop // INIT_BLOCK)):
        lo, hi = block * INIT_BLOCK, (block + 1) * INIT_BLOCK
        gen = torch.Generator().manual_seed(seed * 1_000_003 + block)
        values = torch.randn(INIT_BLOCK, table.shape[1], generator=gen) * std
        a, b = max(lo, start), min(hi, stop)
        table[a - start:b - start] = values[a - lo:b - lo].to(table.dtype)


def torch_sparse_serves(device: torch.device) -> bool:
    """Whether torch_sparse's SparseTensor products run on ``device``: on the CPU once installed, on
    CUDA only when built with CUDA; the Makefile's wheels and a PyPI build on a machine without
    nvcc are CPU-only, and fail with "Not compiled with CUDA support" at the first product."""
    if not WITH_TORCH_SPARSE:
        return False
    return device.type == "cpu" or (device.type == "cuda" and torch_sparse.cuda_version != -1)


def adjacency(edge_index: Tensor, weight: Optional[Tensor], num_src: int, num_dst: int,
              rows: Optional[slice] = None, aggr: str = "mean") -> SparseTensor | AdjPair:
    """``adj_t`` (dst x src) with weights renormalised over each destination's in-edges here;
    with ``rows``, only those destinations keep their in-edges (the shape stays full).

    A SparseTensor where torch_sparse runs on ``edge_index``'s device; elsewhere (CUDA with a
    CPU-only torch-sparse) a sum or mean ``aggr`` is the same aggregate as torch's own CSR
    :class:`AdjPair`, whose values include the aggregation. Max needs torch_sparse
    (:meth:`GraphSAGERecommender.check_device` says so before a run starts)."""
    if aggr in ("sum", "mean") and not torch_sparse_serves(edge_index.device):
        if rows is not None:  # a kept destination keeps all its in-edges: its values do not change
            keep = (edge_index[1] >= rows.start) & (edge_index[1] < rows.stop)
            edge_index, weight = edge_index[:, keep], None if weight is None else weight[keep]
        return bipartite_pair(edge_index, weight, num_src, num_dst, aggr, edge_index.device)
    src, dst = edge_index
    w = normalised_weight(weight, dst, num_dst)
    if rows is not None:
        keep = (dst >= rows.start) & (dst < rows.stop)
        src, dst, w = src[keep], dst[keep], None if w is None else w[keep]
    return SparseTensor(row=dst, col=src, value=w, sparse_sizes=(num_dst, num_src))


def graph_adjacency(graph, use_weight: bool, device: torch.device, ctx: Optional[DistContext] = None,
                    aggr: str = "mean") -> dict:
    """Per edge type of ``graph`` (a sampled batch or the full graph), its ``adj_t`` for ``aggr``
    (see :func:`adjacency`); with ``ctx``, only the in-edges of this rank's block of destination rows."""
    adj = {}
    for et in graph.edge_types:
        num_src, num_dst = int(graph[et[0]].num_nodes), int(graph[et[2]].num_nodes)
        w = graph[et].get("edge_weight") if use_weight else None
        adj[et] = adjacency(graph[et].edge_index.to(device), None if w is None else w.to(device), num_src, num_dst,
                            None if ctx is None else shard(num_dst, ctx.rank, ctx.world_size), aggr)
    return adj


def _norm(kind: str, dim: int) -> nn.Module:
    return nn.LayerNorm(dim) if kind == "layer" else nn.BatchNorm1d(dim)
