"""Graph3 as one homogeneous graph: all node types in one id space, D^-1/2 A D^-1/2 weights.

Used by the LightGCN-on-Graph3 baseline; ``edge_types=[RATES]`` gives the plain user-book graph.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from graphrec_dist.data.bundle import BOOK, USER, Bundle, reverse_type

EdgeType = tuple[str, str, str]


@dataclass
class HomogeneousView:
    """``edge_index`` int64 [2, E] (symmetric, sorted by (row, col), no duplicates), ``edge_weight``
    float32 [E] = D^-1/2 A D^-1/2 of the summed weights, ``offsets[node type]`` = id of its node 0."""

    edge_index: torch.Tensor
    edge_weight: torch.Tensor
    offsets: dict[str, int]
    num_nodes: int


def _forward_types(bundle: Bundle, edge_types: Iterable[EdgeType] | None) -> list[EdgeType]:
    """One direction of each chosen relation (the other is added by symmetrising)."""
    present = list(bundle.graph.edge_types)
    chosen = present if edge_types is None else [tuple(e) for e in edge_types]
    out: list[EdgeType] = []
    for etype in chosen:
        if etype not in present:
            raise KeyError(f"edge type {etype} is not in the bundle (has {present})")
        if etype not in out and reverse_type(etype) not in out:
            out.append(etype)
    return out


def homogeneous_view(bundle: Bundle, edge_types: Iterable[EdgeType] | None = None) -> HomogeneousView:
    """Build the symmetric normalised adjacency over the node types the chosen relations touch.

    Node order: user, book, then the other types in sorted order; ``offsets`` lists every type that
    has nodes in the view. A relation and its stored reverse count once (A[i, j] = A[j, i] = w);
    weights of two different relations between the same pair of nodes are summed.
    """
    etypes = _forward_types(bundle, edge_types)
    touched = {t for e in etypes for t in (e[0], e[2])} | {USER, BOOK}
    ntypes = [USER, BOOK] + sorted(touched - {USER, BOOK})
    offsets, total = {}, 0
    for ntype in ntypes:
        offsets[ntype] = total
        total += int(bundle.graph[ntype].num_nodes)
    rows, cols, vals = [], [], []
    for etype in etypes:
        store = bundle.graph[etype]
        ei = store.edge_index.numpy()
        w = store.edge_weight.numpy().astype(np.float64)
        src, dst = ei[0] + offsets[etype[0]], ei[1] + offsets[etype[2]]
        rows.append(src)
        cols.append(dst)
        vals.append(w)
        if etype != reverse_type(etype):  # a self-reverse relation (similarity) is stored both ways
            rows.append(dst)
            cols.append(src)
            vals.append(w)
    if rows:
        adj = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                            shape=(total, total))
    else:
        adj = sp.csr_matrix((total, total))
    adj.sum_duplicates()
    adj.eliminate_zeros()
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv = np.zeros_like(deg)
    inv[deg > 0] = deg[deg > 0] ** -0.5
    norm = (sp.diags(inv) @ adj @ sp.diags(inv)).tocsr()
    norm.sort_indices()  # CSR order is (row, col) order
    rows = np.repeat(np.arange(total, dtype=np.int64), np.diff(norm.indptr))
    edge_index = torch.from_numpy(np.stack([rows, norm.indices.astype(np.int64)]))
    edge_weight = torch.from_numpy(norm.data.astype(np.float32))
    return HomogeneousView(edge_index, edge_weight, offsets, total)
