"""LightGCN (He et al., 2020) with PyG's ``torch_geometric.nn.models.LightGCN``.

Two registry names share this module:
- ``lightgcn``: propagation over the homogeneous view of Graph3 (users, books, tags,
  authors, languages, year bins), so the extra node types get embeddings and carry signal;
- ``lightgcn_ui``: propagation over the user-book graph only.

The view's ``edge_weight`` is already ``D^-1/2 A D^-1/2`` normalised, so the layers run with
``normalize=False``. Layer outputs are combined with the paper's uniform weights ``1/(K+1)``.
Every training step propagates over the full graph (as in the paper) with a cached sparse CSR
adjacency; the scorer propagates once more and ranks by dot products.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch_geometric.nn.conv import LGConv
from torch_geometric.nn.models import LightGCN as PygLightGCN

from graphrec_dist.data.bundle import BOOK, RATES, USER, Bundle, edge_types_without
from graphrec_dist.data.homogeneous import homogeneous_view
from graphrec_dist.models.base import BPROutput, EmbeddingScorer, Recommender, Scorer, TripletBatch
from graphrec_dist.models.mf import INIT_STD, ego_reg, triplet_scores
from graphrec_dist.models.sparse import AdjPair, SpMM, adjacency_pair


class PairLGConv(LGConv):
    """PyG's ``LGConv`` (``normalize=False``) that also takes an :class:`AdjPair`."""

    def forward(self, x: torch.Tensor, edge_index, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(edge_index, AdjPair):
            return SpMM.apply(x, edge_index.adj_t, edge_index.adj)
        return super().forward(x, edge_index, edge_weight)


class LightGCNRecommender(Recommender):
    """Triplet model over a homogeneous graph whose users and books start at ``offsets``."""

    kind: ClassVar[str] = "triplet"

    def __init__(self, edge_index: torch.Tensor, edge_weight: torch.Tensor, num_nodes: int,
                 offsets: dict[str, int], num_users: int, num_books: int, dim: int, num_layers: int):
        super().__init__()
        self.net = PygLightGCN(num_nodes, dim, num_layers, normalize=False)
        self.net.convs = torch.nn.ModuleList([PairLGConv(normalize=False) for _ in range(num_layers)])
        torch.nn.init.normal_(self.net.embedding.weight, std=INIT_STD)
        # Plain attributes, not buffers: DDP would broadcast buffers every step and checkpoints
        # would carry the graph, which the bundle already holds.
        self._edge_index = edge_index.long()
        self._edge_weight = edge_weight.float()
        self._adj = None
        self.num_nodes = num_nodes
        self.user_offset = int(offsets[USER])
        self.book_offset = int(offsets[BOOK])
        self.num_users = num_users
        self.num_books = num_books

    def adjacency(self) -> AdjPair:
        """The cached adjacency, rebuilt when the model has moved to another device."""
        device = self.net.embedding.weight.device
        if self._adj is None or self._adj.adj_t.device != device:
            self._adj = adjacency_pair(self._edge_index, self._edge_weight, self.num_nodes, device)
        return self._adj

    def propagate(self) -> torch.Tensor:
        """[num_nodes, dim]: the layer-combined embedding of every node."""
        return self.net.get_embedding(self.adjacency())

    def forward(self, batch: TripletBatch) -> BPROutput:
        """Calling the model runs the BPR forward (the trainer calls ``bpr_forward`` directly)."""
        return self.bpr_forward(batch)

    def bpr_forward(self, batch: TripletBatch) -> BPROutput:
        out = self.propagate()
        users = batch.users + self.user_offset
        pos = batch.pos + self.book_offset
        neg = batch.neg + self.book_offset
        pos_score, neg_score = triplet_scores(out[users], out[pos], out[neg])
        ego = self.net.embedding.weight
        reg = ego_reg(ego[users], ego[pos], ego[neg], batch_size=len(users))
        return BPROutput(pos_score, neg_score, reg, out[users], self.split_embeddings(out)[1])

    def split_embeddings(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The user and book rows of a propagated node embedding table."""
        users = out[self.user_offset:self.user_offset + self.num_users]
        books = out[self.book_offset:self.book_offset + self.num_books]
        return users, books

    @torch.no_grad()
    def scorer(self, bundle: Bundle, ctx) -> Scorer:
        """One full-graph propagation, then dot products of user and book rows."""
        users, books = self.split_embeddings(self.propagate())
        return EmbeddingScorer(users, books)


def build(cfg, bundle: Bundle) -> LightGCNRecommender:
    """``lightgcn``: all of Graph3; ``lightgcn_ui``: the user-book graph only."""
    edge_types = ([RATES] if cfg.model.name == "lightgcn_ui"
                  else edge_types_without(bundle.graph.edge_types, cfg.model.exclude_relations))
    view = homogeneous_view(bundle, edge_types=edge_types)
    return LightGCNRecommender(view.edge_index, view.edge_weight, view.num_nodes, view.offsets,
                               bundle.num_users, bundle.num_books, cfg.model.emb_dim, cfg.model.lightgcn_layers)
