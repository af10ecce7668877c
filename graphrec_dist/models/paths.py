"""graphsage's high-rank graph-path term: user -> rated item -> related item.

A score that is a dot product of d-dimensional embeddings has rank at most d. This term adds, for
user u and item i, the weights of the paths from u's training items to i over item-item relations
of the graph itself (``model.path``):

    path(u, i) = |N(u)|^-norm  *  sum over relations r, items j in N(u), edges j -> i of r:
                 alpha_r * a_e + delta_e

``a_e`` is the edge's own weight (the TF-IDF cosine of ``similar``; the co-interaction cosine of
``co_items``, each item's top ``model.path_top_k`` from training pairs only), ``alpha_r`` a learned
per-relation scale and ``delta_e`` a learned per-edge offset (``model.path_edge_weights``): both
are trained end to end by graphsage's own loss, as its embeddings are. Its rank is bounded by the
number of items, not by the embedding width.

Cold items keep their ``similar`` in-edges (text needs no interactions) and have no ``co_items``
ones; while training, a book that ``model.id_dropout`` treats as new loses its co-interaction
edges and its place in histories, as its ratings are hidden from message passing.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import Tensor, nn

from graphrec_dist.data.bundle import SIMILAR, Bundle
from graphrec_dist.data.graph3 import co_interaction_edges
from graphrec_dist.models.sparse import csr_rows

RELATIONS = ("co_items", "similar")


def path_relations(bundle: Bundle, names: list[str], top_k: int,
                   graph=None) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """Per relation name, its (src, dst, weight) item-item edges (training data only). ``graph``:
    the model's message graph (default the bundle's): a model that leaves ``similar`` out of it
    (graphsage_ui, ``model.exclude_relations``) gets that relation empty here too."""
    graph = bundle.graph if graph is None else graph
    out = {}
    for name in names:
        if name == "co_items":
            train = bundle.train.numpy()
            src, dst, w = co_interaction_edges(train[:, 0], train[:, 1], bundle.num_books, top_k)
            out[name] = (torch.from_numpy(src), torch.from_numpy(dst), torch.from_numpy(w).float())
        elif name == "similar":
            store = graph[SIMILAR] if SIMILAR in graph.edge_types else None
            if store is None:  # a dataset without item text: the relation is empty
                out[name] = (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0))
            else:
                ei = store.edge_index
                w = store.get("edge_weight")
                out[name] = (ei[0], ei[1], torch.ones(ei.size(1)) if w is None else w.float())
        else:
            raise ValueError(f"unknown path relation {name!r}; expected one of {', '.join(RELATIONS)}")
    return out


def history_csr(pairs: Tensor, num_users: int) -> tuple[Tensor, Tensor]:
    """(indptr, items) of each user's items from (user, item) rows."""
    order = torch.argsort(pairs[:, 0], stable=True)
    counts = torch.bincount(pairs[:, 0], minlength=num_users)
    indptr = torch.zeros(num_users + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(counts, 0)
    return indptr, pairs[order, 1].contiguous()


class _PathSpMM(torch.autograd.Function):
    """``W^T @ x`` for a CSR ``W^T`` whose values are learned: the forward is torch's CSR x dense
    kernel; the backward gives the values their gradient, ``dL/dw_e = <g[dst_e], x[src_e]>``, in
    chunks of edges (never one [edges x columns] product at once), or from ``g @ x^T`` where the
    edges are dense enough. ``x`` gets no gradient."""

    CHUNK = 16384  # edges per chunk of the values' gradient
    # Where items^2 <= this x edges, the gradient is read off one dense [items x items] product
    # ``g @ x^T`` instead, far cheaper per multiply-add than gathers (demo data, 1,000 books,
    # 25,838 similar edges: the CSR product 74.7 -> 15.0 ms a batch, benchmarks.path_product).
    DENSE_GRAD_RATIO = 100

    @staticmethod
    def forward(ctx, values: Tensor, crow: Tensor, col: Tensor, row: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(row, col, x)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the kernel is what we need
            warnings.simplefilter("ignore", UserWarning)
            adj = torch.sparse_csr_tensor(crow, col, values.detach(), size=(x.size(0), x.size(0)))
        return adj @ x

    @staticmethod
    def backward(ctx, grad: Tensor):
        row, col, x = ctx.saved_tensors
        if x.size(0) ** 2 <= _PathSpMM.DENSE_GRAD_RATIO * len(row):
            return (grad @ x.T)[row, col], None, None, None, None
        out = torch.empty(len(row), dtype=grad.dtype, device=grad.device)
        for a in range(0, len(row), _PathSpMM.CHUNK):
            b = min(a + _PathSpMM.CHUNK, len(row))
            out[a:b] = (grad[row[a:b]] * x[col[a:b]]).sum(dim=1)
        return out, None, None, None, None


class PathTerm(nn.Module):
    """The learned path weights and the scores they give; see the module docstring."""

    def __init__(self, num_items: int, relations: dict[str, tuple[Tensor, Tensor, Tensor]], norm: float,
                 edge_weights: bool, item_counts: Optional[Tensor] = None):
        """``item_counts``: training interactions per item, for the leave-user-out correction of
        co-interaction weights (see :meth:`scores`); None: no correction."""
        super().__init__()
        self.num_items, self.norm, self.names = num_items, norm, list(relations)
        src = torch.cat([r[0] for r in relations.values()]).long()
        dst = torch.cat([r[1] for r in relations.values()]).long()
        base = torch.cat([r[2] for r in relations.values()]).float()
        rel = torch.cat([torch.full((len(r[0]),), k, dtype=torch.long) for k, r in enumerate(relations.values())])
        # W^T as CSR: row = the item scored (dst), column = the history item (src).
        order = torch.argsort(dst * num_items + src, stable=True)
        self._src, self._dst, self._base, self._rel = src[order], dst[order], base[order], rel[order]
        self._crow = torch.zeros(num_items + 1, dtype=torch.long)
        self._crow[1:] = torch.cumsum(torch.bincount(self._dst, minlength=num_items), 0)
        # The same edges by source, for the enumerated product (:meth:`_enumerated`).
        self._by_src = torch.argsort(self._src, stable=True)
        self._out_ptr = torch.zeros(num_items + 1, dtype=torch.long)
        self._out_ptr[1:] = torch.cumsum(torch.bincount(self._src, minlength=num_items), 0)
        co = torch.tensor([n == "co_items" for n in self.names], dtype=torch.bool)
        self._co = co[self._rel] if len(self._rel) else torch.zeros(0, dtype=torch.bool)
        self._loo = self._leave_user_out(item_counts)
        self.alpha = nn.Parameter(torch.ones(len(relations)))
        self.delta = nn.Parameter(torch.zeros(len(src))) if edge_weights else None
        self.dropout = 0.0  # model.path_dropout, applied by the model while training

    def _leave_user_out(self, item_counts: Optional[Tensor]) -> Tensor:
        """Per edge, how its co-interaction cosine ``c / sqrt(n_src n_dst)`` changes when one user
        who has both items is left out: ``(c-1) / sqrt((n_src-1)(n_dst-1))`` minus the cosine
        (0 off co_items edges). A training positive would otherwise be predicted by co-counts
        that its own interaction made, which a held-out item never is."""
        out = torch.zeros(len(self._src))
        if item_counts is None or not self._co.any():
            return out
        n_src, n_dst = item_counts[self._src].double(), item_counts[self._dst].double()
        cos = self._base.double()
        count = torch.round(cos * torch.sqrt(n_src * n_dst))
        rest = torch.sqrt((n_src - 1).clamp(min=0) * (n_dst - 1).clamp(min=0))
        left = torch.where(rest > 0, (count - 1).clamp(min=0) / rest.clamp(min=1e-12), torch.zeros_like(rest))
        return torch.where(self._co, left - cos, torch.zeros_like(cos)).float()

    @property
    def num_edges(self) -> int:
        return int(self._src.numel())

    def edge_values(self) -> Tensor:
        """Every edge's weight, on the CPU with the graph (the parameters may live on a GPU; the
        gradient flows back through the copy)."""
        w = self.alpha.cpu()[self._rel] * self._base
        return w if self.delta is None else w + self.delta.cpu()

    def scores(self, indptr: Tensor, items: Tensor, rows: Tensor, exclude: Optional[Tensor] = None,
               new_items: Optional[Tensor] = None, dropout: float = 0.0) -> Tensor:
        """[len(rows), num_items] path scores of the users ``rows`` of history CSR (indptr, items).

        ``exclude``: int64 [n, 2] (row position, item) pairs left out of the histories (training:
        each positive is scored from the rest of its user's history, and the co-interaction
        weights into it leave its user out). ``new_items``: bool
        [num_items], items treated as new (no history entries, no co-interaction edges).
        ``dropout``: share of history entries dropped at random (training).
        Costs the cheaper of two products (:meth:`_product`)."""
        owner, entry = csr_rows(indptr, rows)
        hist = items[entry]
        if dropout > 0:
            keep = torch.rand(len(hist)) >= dropout
            owner, hist = owner[keep], hist[keep]
        # x^T: [num_items, len(rows)], a user's column holds |history|^-norm at its history items.
        x = torch.zeros(self.num_items, len(rows))
        x[hist, owner] = 1.0
        if exclude is not None and len(exclude):
            x[exclude[:, 1], exclude[:, 0]] = 0.0
        if new_items is not None:
            x[new_items] = 0.0
        if self.norm:
            x = x * x.sum(dim=0).clamp(min=1.0).pow(-self.norm)
        values = self.edge_values()
        if new_items is not None and self._co.any():
            values = values.masked_fill(self._co & new_items[self._dst], 0.0)
        out = self._product(values, x)  # [num_items, len(rows)]
        if exclude is not None and len(exclude) and bool(self._loo.any()):
            out = out + self._positive_correction(exclude, x, out.shape)
        return out.T

    # A scattered multiply-add costs about this many of the CSR kernel's (12.5 and 13.8 on real
    # Goodbooks and MovieLens 100K, 2026-12-03, with
    # ``python -m graphrec_dist.benchmarks.path_product``, before the kernel's dense gradient made
    # it cheaper still: 29 on MovieLens after; the choice is the same on both and on the demo data).
    SCATTER_COST = 12.0

    def _product(self, values: Tensor, x: Tensor) -> Tensor:
        """``W^T @ x`` by whichever costs fewer multiply-adds: the CSR kernel, edges x columns, or
        enumerating each nonzero of ``x`` (a history entry) with its item's out-edges, which is far
        cheaper where histories are short against the number of items (real Goodbooks: ~72 of
        7,770 books a user)."""
        item, col = x.nonzero(as_tuple=True)
        enumerated = int((self._out_ptr[item + 1] - self._out_ptr[item]).sum())
        if enumerated * self.SCATTER_COST < self.num_edges * x.size(1):
            return self._enumerated(values, x, item, col)
        return _PathSpMM.apply(values, self._crow, self._src, self._dst, x)

    def _enumerated(self, values: Tensor, x: Tensor, item: Tensor, col: Tensor) -> Tensor:
        """``W^T @ x`` from x's nonzeros (item, col): each adds ``x * w_e`` at (dst_e, col) for every
        out-edge e of its item. Plain autograd gives the values their gradient."""
        owner, pos = csr_rows(self._out_ptr, item)
        edge = self._by_src[pos]
        target = self._dst[edge] * x.size(1) + col[owner]
        contrib = x[item, col][owner] * values[edge]
        out = torch.zeros(self.num_items * x.size(1), dtype=contrib.dtype).index_add(0, target, contrib)
        return out.view(self.num_items, x.size(1))

    def _positive_correction(self, pairs: Tensor, x: Tensor, shape: torch.Size) -> Tensor:
        """[num_items, rows] the leave-user-out change of the scores of ``pairs`` (row, item): the
        in-edges of each pair's item from its row's (weighted) history."""
        owner, edge = csr_rows(self._crow, pairs[:, 1])
        row, item = pairs[owner, 0], pairs[owner, 1]
        change = self.alpha.cpu()[self._rel[edge]] * self._loo[edge] * x[self._src[edge], row]
        return torch.zeros(shape).index_put((item, row), change, accumulate=True)


def build_path_term(cfg, bundle: Bundle, graph=None) -> Optional[PathTerm]:
    """The :class:`PathTerm` of ``cfg.model`` over ``graph``'s relations (see :func:`path_relations`;
    None when ``model.path`` is empty)."""
    m = cfg.model
    if not m.path:
        return None
    counts = torch.bincount(bundle.train[:, 1], minlength=bundle.num_books)
    term = PathTerm(bundle.num_books, path_relations(bundle, list(m.path), m.path_top_k, graph), m.path_norm,
                    m.path_edge_weights, counts if m.path_leave_user_out else None)
    term.dropout = m.path_dropout
    with torch.no_grad():
        term.alpha.fill_(m.path_init)
    return term


class PathScorer:
    """Dot products of the GNN outputs plus the path term of each user's history."""

    def __init__(self, user_emb: Tensor, item_emb: Tensor, path: PathTerm, history: tuple[Tensor, Tensor]):
        self.user_emb, self.item_emb, self.path = user_emb, item_emb, path
        self.indptr, self.items = history
        self.num_items = int(item_emb.shape[0])

    @torch.no_grad()
    def scores(self, users: Tensor) -> Tensor:
        dot = self.user_emb[users.to(self.user_emb.device)] @ self.item_emb.T
        return dot + self.path.scores(self.indptr.cpu(), self.items.cpu(), users.cpu()).to(dot.device)
