"""graphsage's high-rank graph-path term: user -> rated item -> related item.

A score that is a dot product of d-dimensional embeddings has rank at most d. This term adds, for
user u and item i, the weights of the paths from u's training items to i over item-item relations
of the graph itself (``model.path.relations``):

    path(u, i) = |N(u)|^-norm  *  sum over relations r, items j in N(u), edges j -> i of r:
                 alpha_r * a_e + delta_e

``a_e`` is the edge's own weight (the TF-IDF cosine of ``similar``; the co-interaction cosine of
``co_items``, each item's top ``model.path.top_k`` from training pairs only), ``alpha_r`` a learned
per-relation scale and ``delta_e`` a learned per-edge offset (``model.path.edge_weights``): both
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


class _Entries:
    """The history matrix x ([num_items, rows], a row's column holding |history|^-norm at its
    history items) as its nonzeros, sorted by (row, item): where x is ~1% full (a full-scale
    batch: ~110 of 10,000 books for each of ~7,500 users), the restricted products read only these."""

    def __init__(self, item: Tensor, row: Tensor, value: Tensor, num_items: int, num_rows: int):
        """The entries, already sorted by (row, item), each (row, item) once."""
        self.item, self.row, self.value, self.key = item, row, value, row * num_items + item
        self.num_items, self.num_rows = num_items, num_rows

    def at(self, rows: Tensor, items: Tensor) -> Tensor:
        """x[items, rows], element by element (0 off the histories)."""
        if len(self.key) == 0:
            return torch.zeros(len(rows))
        query = rows * self.num_items + items
        pos = torch.searchsorted(self.key, query).clamp(max=len(self.key) - 1)
        return torch.where(self.key[pos] == query, self.value[pos], torch.zeros(()))

    def dense(self) -> Tensor:
        x = torch.zeros(self.num_items, self.num_rows)
        x[self.item, self.row] = self.value
        return x


class _PathSpMM(torch.autograd.Function):
    """``W^T @ x`` for a CSR ``W^T`` whose values are learned: the forward is torch's CSR x dense
    kernel; the backward gives the values their gradient, ``dL/dw_e = <g[dst_e], x[src_e]>``, in
    chunks of edges (never one [edges x columns] product at once), or from ``g @ x^T`` where the
    edges are dense enough. ``x`` gets no gradient."""

    CHUNK = 16384  # edges per chunk of the values' gradient
    # Where items^2 <= this x edges, the gradient is read off one dense [items x items] product
    # ``g @ x^T`` instead, far cheaper per multiply-add than gathers (demo data, 1,000 books,
    # 25,838 similar edges: the CSR product 74.7 -> 15.0 ms a batch, benchmarks/experiments/path_product.py).
    DENSE_GRAD_RATIO = 100

    @staticmethod
    def forward(ctx, values: Tensor, crow: Tensor, col: Tensor, row: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(row, col, x)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the kernel is what we need
            warnings.simplefilter("ignore", UserWarning)
            adj = torch.sparse_csr_tensor(crow, col, values.detach(), size=(len(crow) - 1, x.size(0)))
        return adj @ x

    @staticmethod
    def backward(ctx, grad: Tensor):
        row, col, x = ctx.saved_tensors
        if grad.size(0) * x.size(0) <= _PathSpMM.DENSE_GRAD_RATIO * len(row):
            return (grad @ x.T)[row, col], None, None, None, None
        out = torch.empty(len(row), dtype=grad.dtype, device=grad.device)
        for a in range(0, len(row), _PathSpMM.CHUNK):
            b = min(a + _PathSpMM.CHUNK, len(row))
            out[a:b] = (grad[row[a:b]] * x[col[a:b]]).sum(dim=1)
        return out, None, None, None, None


class _Relation:
    """One relation's edges as ``W^T`` in CSR (row = the item scored, column = the history item)
    and the same edges by source, for the enumerated product."""

    def __init__(self, num_items: int, src: Tensor, dst: Tensor, base: Tensor, co: bool):
        order = torch.argsort(dst * num_items + src, stable=True)
        self.num_items, self.co = num_items, co
        self.src, self.dst, self.base = src[order], dst[order], base[order]
        self.crow = torch.zeros(num_items + 1, dtype=torch.long)
        self.crow[1:] = torch.cumsum(torch.bincount(self.dst, minlength=num_items), 0)
        self.by_src = torch.argsort(self.src, stable=True)
        self.out_ptr = torch.zeros(num_items + 1, dtype=torch.long)
        self.out_ptr[1:] = torch.cumsum(torch.bincount(self.src, minlength=num_items), 0)
        self.loo = torch.zeros(len(self.src))  # the leave-user-out change of each weight (co_items)

    def __len__(self) -> int:
        return int(self.src.numel())

    def out_degree(self, item: Tensor) -> int:
        """Out-edges of the history entries ``item``, summed: the enumerated product's multiply-adds."""
        return int((self.out_ptr[item + 1] - self.out_ptr[item]).sum())

    # A dense [items x items] product costs about 1/this of the CSR kernel per multiply-add, so a
    # relation with more than items^2 / this edges is multiplied as a dense matrix: MovieLens 100K's
    # 1,008 items, 450 columns, one thread: 10.5 ms dense against the kernel's 6.5 ms at 95k edges
    # and 16.1 ms at 259k (2026-12-07, a throwaway timing loop; co_items with every neighbour).
    DENSE_RATIO = 8

    def product(self, values: Tensor, x: Tensor, scatter_cost: float) -> Tensor:
        """``W^T @ x`` by whichever costs fewer multiply-adds: a dense matrix product where the
        relation is dense enough (:attr:`DENSE_RATIO`), else the CSR kernel, edges x columns, or
        enumerating each nonzero of ``x`` (a history entry) with its item's out-edges, which is far
        cheaper where histories are short against the number of items (real Goodbooks: ~72 of
        7,770 books a user). A scattered multiply-add is priced at ``scatter_cost`` kernel ones."""
        if self.num_items ** 2 <= self.DENSE_RATIO * len(self):
            return self._dense(values) @ x
        item, col = x.nonzero(as_tuple=True)
        if self.out_degree(item) * scatter_cost < len(self) * x.size(1):
            return self._enumerated(values, x, item, col)
        return _PathSpMM.apply(values, self.crow, self.src, self.dst, x)

    def column_product(self, values: Tensor, x: _Entries, columns: Tensor) -> Tensor:
        """``(W^T @ x)[columns]``: the rows of the scored items ``columns`` only (duplicates
        allowed), from each history entry's out-edges into them."""
        owner, edge = csr_rows(self.crow, columns)  # the columns' in-edges
        order = torch.argsort(self.src[edge])
        by_src = torch.searchsorted(self.src[edge][order], torch.arange(self.num_items + 1))
        entry, pos = csr_rows(by_src, x.item)  # each history entry's edges into the columns
        k = order[pos]
        contrib = x.value[entry] * values[edge[k]]
        out = torch.zeros(len(columns) * x.num_rows, dtype=contrib.dtype)
        return out.index_add(0, owner[k] * x.num_rows + x.row[entry], contrib).view(len(columns), x.num_rows)

    def pair_product(self, values: Tensor, x: _Entries, rows: Tensor, items: Tensor) -> Tensor:
        """``(W^T @ x)[items[p], rows[p]]`` for each pair p, from the in-edges of its item."""
        owner, edge = csr_rows(self.crow, items)
        contrib = values[edge] * x.at(rows[owner], self.src[edge])
        return torch.zeros(len(items), dtype=contrib.dtype).index_add(0, owner, contrib)

    def _dense(self, values: Tensor) -> Tensor:
        """``W^T`` as a dense [items x items] matrix (autograd carries the values' gradient)."""
        dense = torch.zeros(self.num_items, self.num_items, dtype=values.dtype)
        return dense.index_put((self.dst, self.src), values, accumulate=True)

    def _enumerated(self, values: Tensor, x: Tensor, item: Tensor, col: Tensor) -> Tensor:
        """``W^T @ x`` from x's nonzeros (item, col): each adds ``x * w_e`` at (dst_e, col) for every
        out-edge e of its item. Plain autograd gives the values their gradient."""
        owner, pos = csr_rows(self.out_ptr, item)
        edge = self.by_src[pos]
        target = self.dst[edge] * x.size(1) + col[owner]
        contrib = x[item, col][owner] * values[edge]
        out = torch.zeros(self.num_items * x.size(1), dtype=contrib.dtype).index_add(0, target, contrib)
        return out.view(self.num_items, x.size(1))


class PathTerm(nn.Module):
    """The learned path weights and the scores they give; see the module docstring."""

    def __init__(self, num_items: int, relations: dict[str, tuple[Tensor, Tensor, Tensor]], norm: float,
                 edge_weights: bool, item_counts: Optional[Tensor] = None):
        """``item_counts``: training interactions per item, for the leave-user-out correction of
        co-interaction weights (see :meth:`scores`); None: no correction."""
        super().__init__()
        self.num_items, self.norm, self.names = num_items, norm, list(relations)
        self.relations = [_Relation(num_items, r[0].long(), r[1].long(), r[2].float(), name == "co_items")
                          for name, r in relations.items()]
        if item_counts is not None:
            for rel in self.relations:
                if rel.co:
                    rel.loo = self._leave_user_out(rel, item_counts)
        ends = torch.cumsum(torch.tensor([0] + [len(r) for r in self.relations]), 0).tolist()
        self._slices = [slice(a, b) for a, b in zip(ends[:-1], ends[1:])]  # each relation's share of delta
        self._corrects = any(bool(r.loo.any()) for r in self.relations)
        self.alpha = nn.Parameter(torch.ones(len(relations)))
        self.delta = nn.Parameter(torch.zeros(ends[-1])) if edge_weights else None
        self.dropout = 0.0  # model.path.dropout, applied by the model while training

    @staticmethod
    def _leave_user_out(rel: _Relation, item_counts: Tensor) -> Tensor:
        """Per edge, how its co-interaction cosine ``c / sqrt(n_src n_dst)`` changes when one user
        who has both items is left out: ``(c-1) / sqrt((n_src-1)(n_dst-1))`` minus the cosine.
        A training positive would otherwise be predicted by co-counts that its own interaction
        made, which a held-out item never is."""
        n_src, n_dst = item_counts[rel.src].double(), item_counts[rel.dst].double()
        cos = rel.base.double()
        count = torch.round(cos * torch.sqrt(n_src * n_dst))
        rest = torch.sqrt((n_src - 1).clamp(min=0) * (n_dst - 1).clamp(min=0))
        left = torch.where(rest > 0, (count - 1).clamp(min=0) / rest.clamp(min=1e-12), torch.zeros_like(rest))
        return (left - cos).float()

    @property
    def num_edges(self) -> int:
        return sum(len(r) for r in self.relations)

    def edges(self) -> tuple[Tensor, Tensor]:
        """(src, dst) of every edge, in the order of :meth:`edge_values` and ``delta``."""
        return (torch.cat([r.src for r in self.relations]), torch.cat([r.dst for r in self.relations]))

    def enumerated_madds(self, hist: Tensor) -> int:
        """Multiply-adds of the enumerated product over the history entries ``hist``."""
        return sum(r.out_degree(hist) for r in self.relations)

    def edge_values(self) -> Tensor:
        """Every edge's weight, on the CPU with the graph (the parameters may live on a GPU; the
        gradient flows back through the copy)."""
        alpha = self.alpha.cpu()
        w = torch.cat([alpha[k] * r.base for k, r in enumerate(self.relations)])
        return w if self.delta is None else w + self.delta.cpu()

    def scores(self, indptr: Tensor, items: Tensor, rows: Tensor, exclude: Optional[Tensor] = None,
               new_items: Optional[Tensor] = None, dropout: float = 0.0) -> Tensor:
        """[len(rows), num_items] path scores of the users ``rows`` of history CSR (indptr, items).

        ``exclude``: int64 [n, 2] (row position, item) pairs left out of the histories (training:
        each positive is scored from the rest of its user's history, and the co-interaction
        weights into it leave its user out). ``new_items``: bool
        [num_items], items treated as new (no history entries, no co-interaction edges).
        ``dropout``: share of history entries dropped at random (training).
        Costs the cheapest product per relation (:meth:`_Relation.product`)."""
        entries = self.history_entries(indptr, items, rows, exclude, new_items, dropout)
        out = self._product(entries.dense(), new_items)  # [num_items, len(rows)]
        if exclude is not None and len(exclude) and self._corrects:
            change = self._pair_correction(entries, exclude[:, 0], exclude[:, 1])
            out = out.index_put((exclude[:, 1], exclude[:, 0]), change, accumulate=True)
        return out.T

    def restricted_scores(self, indptr: Tensor, items: Tensor, rows: Tensor, columns: Tensor, pairs: Tensor,
                          exclude: Optional[Tensor] = None, new_items: Optional[Tensor] = None,
                          dropout: float = 0.0) -> tuple[Tensor, Tensor]:
        """What a softmax over a few shared items reads of :meth:`scores`, without its [len(rows),
        num_items] table: ``scores(...)[:, columns]`` and ``scores(...)[pairs[:, 0], pairs[:, 1]]``
        (a batch's positives and negatives), from the in-edges of those items alone. At full
        Goodbooks scale (~7,000 users a batch, 10,000 books, 1,024 shared) that is ~10x fewer
        multiply-adds and no table of 70M scores."""
        x = self.history_entries(indptr, items, rows, exclude, new_items, dropout)
        table = self._each_relation(new_items, lambda rel, w: rel.column_product(w, x, columns))
        at = self._each_relation(new_items, lambda rel, w: rel.pair_product(w, x, pairs[:, 0], pairs[:, 1]))
        if exclude is not None and len(exclude) and self._corrects:
            change = self._pair_correction(x, exclude[:, 0], exclude[:, 1])
            # The excluded pairs' items among the columns (drawn with replacement: maybe several times).
            order = torch.argsort(columns)
            item_ptr = torch.searchsorted(columns[order], torch.arange(self.num_items + 1))
            owner, entry = csr_rows(item_ptr, exclude[:, 1])
            table = table.index_put((order[entry], exclude[owner, 0]), change[owner], accumulate=True)
            keys = pairs[:, 0] * self.num_items + pairs[:, 1]
            excluded = torch.isin(keys, exclude[:, 0] * self.num_items + exclude[:, 1])
            if bool(excluded.any()):
                at = at.index_put((excluded.nonzero()[:, 0],), self._pair_correction(
                    x, pairs[excluded, 0], pairs[excluded, 1]), accumulate=True)
        return table.T, at

    def history_entries(self, indptr: Tensor, items: Tensor, rows: Tensor, exclude: Optional[Tensor] = None,
                        new_items: Optional[Tensor] = None, dropout: float = 0.0) -> _Entries:
        """The history matrix x of the users ``rows`` (see :class:`_Entries`; :meth:`scores` for
        the arguments): their distinct training items less the excluded pairs and new items."""
        owner, entry = csr_rows(indptr, rows)
        hist = items[entry]
        if dropout > 0:
            keep = torch.rand(len(hist)) >= dropout
            owner, hist = owner[keep], hist[keep]
        key = torch.unique(owner * self.num_items + hist)  # sorted: (row, item) order
        if exclude is not None and len(exclude):
            key = key[~torch.isin(key, exclude[:, 0] * self.num_items + exclude[:, 1])]
        owner, hist = key // self.num_items, key % self.num_items
        if new_items is not None:
            keep = ~new_items[hist]
            owner, hist = owner[keep], hist[keep]
        value = torch.ones(len(hist))
        if self.norm:
            value = torch.bincount(owner, minlength=len(rows)).clamp(min=1).float().pow(-self.norm)[owner]
        return _Entries(hist, owner, value, self.num_items, len(rows))

    # A scattered multiply-add costs about this many of the CSR kernel's where the edge weights are
    # differentiated (the kernel's backward forms a gradient per edge): 12.5 and 13.8 on real
    # Goodbooks and MovieLens 100K, 2026-12-03, with ``python benchmarks/experiments/
    # path_product.py``, before the kernel's dense gradient made it cheaper still (29 on MovieLens
    # after; the choice is the same on both and on the demo data).
    SCATTER_COST = 12.0
    # ... and where they are not (no per-edge offsets: only the kernel's forward runs, ~10x cheaper):
    # 220 on real Goodbooks, 68 on MovieLens 100K, 84 on the demo data (2026-12-03, the same
    # benchmark; the kernel wins on all three, by 2.3x, 6.2x and 9.2x).
    FIXED_SCATTER_COST = 150.0

    def _product(self, x: Tensor, new_items: Optional[Tensor] = None, values: Optional[Tensor] = None) -> Tensor:
        """``W^T @ x``, summed over the relations. Without per-edge offsets a relation's weights are
        ``alpha_r`` times fixed ones, so its product is taken without autograd and only the
        scale is differentiated (``dL/dalpha_r = <dL/dout, P_r>``): no gradient per edge is ever
        formed. ``values``: every edge's weight (default :meth:`edge_values`), which forces the
        differentiated product."""
        if values is None and self.delta is None:
            return self._each_relation(new_items, lambda rel, w: rel.product(w, x, self.FIXED_SCATTER_COST),
                                       torch.zeros_like(x))
        return self._each_relation(new_items, lambda rel, w: rel.product(w, x, self.SCATTER_COST),
                                   torch.zeros_like(x), self.edge_values() if values is None else values)

    def _each_relation(self, new_items: Optional[Tensor], product, empty: Optional[Tensor] = None,
                       values: Optional[Tensor] = None) -> Tensor:
        """The sum over relations of ``product(relation, its edge weights)``. Without per-edge
        offsets (and no ``values``) each is taken without autograd on the fixed weights and scaled
        by ``alpha_r``; else on every edge's differentiated weight. ``empty``: the sum of none."""
        out = empty
        if values is None and self.delta is None:
            alpha = self.alpha.cpu()
            for k, rel in enumerate(self.relations):
                with torch.no_grad():
                    part = product(rel, self._masked(rel, rel.base, new_items))
                out = alpha[k] * part if out is None else out + alpha[k] * part
            return out
        values = self.edge_values() if values is None else values
        for rel, part in zip(self.relations, self._slices):
            prod = product(rel, self._masked(rel, values[part], new_items))
            out = prod if out is None else out + prod
        return out

    @staticmethod
    def _masked(rel: _Relation, values: Tensor, new_items: Optional[Tensor]) -> Tensor:
        """A co-interaction relation's weights with the edges into new items at 0 (a new item has no
        interactions to have co-occurred in)."""
        if new_items is None or not rel.co:
            return values
        return values.masked_fill(new_items[rel.dst], 0.0)

    def _pair_correction(self, x: _Entries, rows: Tensor, items: Tensor) -> Tensor:
        """[len(rows)] the leave-user-out change of the scores of the excluded pairs (rows, items):
        the in-edges of each pair's item from its row's (weighted) history (co_items only)."""
        out = torch.zeros(len(rows))
        alpha = self.alpha.cpu()
        for k, rel in enumerate(self.relations):
            if bool(rel.loo.any()):
                out = out + alpha[k] * rel.pair_product(rel.loo, x, rows, items)
        return out


def build_path_term(model_cfg, bundle: Bundle, graph=None) -> Optional[PathTerm]:
    """The :class:`PathTerm` of the model section ``model_cfg`` over ``graph``'s relations (see
    :func:`path_relations`; None when ``model.path.relations`` is empty)."""
    p = model_cfg.path
    if not p.relations:
        return None
    counts = torch.bincount(bundle.train[:, 1], minlength=bundle.num_books)
    term = PathTerm(bundle.num_books, path_relations(bundle, list(p.relations), p.top_k, graph), p.norm,
                    p.edge_weights, counts if p.leave_user_out else None)
    term.dropout = p.dropout
    with torch.no_grad():
        term.alpha.fill_(p.init)
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
