"""graphsage as a recommender: ``graphsage`` (all of Graph3) and ``graphsage_ui`` (user-book only).

The encoder (id embeddings, ``to_hetero`` SAGE layers, adjacencies) is in ``models/sage_encoder.py``,
new users' fold-in in ``models/graphsage_inference.py``. Here: the training regimes (sampled
subgraphs, per-layer blocks, the full graph), scoring, user sharding, the path term's hooks, and
layer-wise inference for every node.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# torch-sparse is the optional `sparse` extra (pyproject): PyG's stand-ins let the package import
# without it, and say "requires 'torch-sparse'" when graphsage first builds an adjacency.
from torch_geometric.typing import WITH_TORCH_SPARSE, torch_sparse

from graphrec_dist.config import ModelConfig, TrainConfig
from graphrec_dist.data.bundle import BOOK, RATES, REV_RATES, USER, Bundle
from graphrec_dist.data.graph3 import co_interaction_edges
from graphrec_dist.distributed import DistContext, all_gather_rows, all_reduce_sum, shard
from graphrec_dist.errors import ConfigError
from graphrec_dist.models.base import BPROutput, EmbeddingScorer, Recommender, RowScores, TripletBatch, training_graph
from graphrec_dist.models.block_sampler import BlockSampler
from graphrec_dist.models.graphsage_inference import NewUserInference
from graphrec_dist.models.mf import ego_reg, triplet_scores
from graphrec_dist.models.paths import PathScorer, build_path_term, history_csr
from graphrec_dist.models.sage_encoder import EdgeType, HeteroSAGE, graph_adjacency, torch_sparse_serves
from graphrec_dist.models.sparse import (
    AdjPair,
    PartialAdj,
    RowTotals,
    bipartite_pair,
    drop_rows,
    restrict_rows,
    row_totals,
)

# model.co_items: book -> book edges from training co-interactions (built by the model, not stored).
CO_ITEMS = (BOOK, "co_rated", BOOK)


@dataclass(frozen=True)
class TrainingRegime:
    """How graphsage is trained: the part of ``cfg.train`` the model acts on. :func:`build` reads it
    from the config and hands it over, so the model never reads the train section itself."""

    mode: str  # train.mode: "sampled" or "full_graph"
    sampler: str  # train.sampler (sampled mode): "blocks" or "pyg"
    loss: str  # train.loss: "bpr" or "softmax"
    num_neighbors: tuple[int, ...]  # train.num_neighbors: the block sampler's fanout per layer
    exclude_seed_edges: bool  # train.exclude_seed_edges
    softmax_negatives: int  # train.softmax_negatives: shared items of a full-graph softmax step
    seed: int  # train.seed: a sharded user table's initial rows

    @classmethod
    def from_train(cls, train: TrainConfig) -> TrainingRegime:
        """The regime a ``TrainConfig`` sets."""
        return cls(train.mode, train.sampler, train.loss, tuple(train.num_neighbors), train.exclude_seed_edges,
                   train.softmax_negatives, train.seed)


class GraphSAGERecommender(NewUserInference, Recommender):
    """score(user, book) from the GNN outputs (dot, or cosine / temperature: ``model.score``).

    ``train.mode=sampled``: trained on LinkNeighborLoader triplet subgraphs (kind ``sampled``).
    ``train.mode=full_graph``: every step runs the layers over the whole message graph and takes
    (user, positive, negatives) index batches (kind ``triplet``); it also returns every book's
    output, so ``train.loss=softmax`` ranks each positive against the whole catalogue.
    """

    def __init__(self, bundle: Bundle, model_cfg: ModelConfig, regime: TrainingRegime, user_book_only: bool):
        super().__init__()
        self.mode = regime.mode
        # Full-graph steps and block sampling take (user, positive, negatives) index batches; PyG's
        # loader hands over sampled subgraphs.
        self.kind = "sampled" if regime.mode == "sampled" and regime.sampler == "pyg" else "triplet"
        self.num_neighbors = list(regime.num_neighbors)
        self._block_sampler = None
        self._frozen: Optional[tuple] = None  # freeze_inference: (outputs, layer inputs)
        self.user_book_only = user_book_only
        self.exclude_relations = tuple(model_cfg.exclude_relations)
        self.use_edge_weight = model_cfg.edge_weight
        self.cosine = model_cfg.score == "cosine"
        self.temperature = model_cfg.temperature
        self.emb_dropout = model_cfg.emb_dropout
        self.history_dropout = model_cfg.history_dropout
        self.exclude_seed_edges = regime.exclude_seed_edges
        self.id_dropout = model_cfg.id_dropout
        # A learned per-book score offset: cosine scores alone cannot say that a book is popular.
        self.item_bias = nn.Parameter(torch.zeros(bundle.num_books)) if model_cfg.item_bias else None
        self.co_items = model_cfg.co_items
        self._co_edges: Optional[tuple[Tensor, Tensor, Tensor]] = None  # (train pairs, edge_index, weight)
        graph = self.message_graph(bundle)
        num_nodes = {nt: int(graph[nt].num_nodes) for nt in graph.node_types}
        # dist.sharding=users: this rank's block of users (data.partition.UserShard), else None.
        self.shard = bundle.shard
        self.dist = DistContext()  # the process group of the partial aggregates (use_context)
        self.encoder = HeteroSAGE(num_nodes, list(graph.edge_types), model_cfg,
                                  None if self.shard is None else slice(self.shard.start, self.shard.stop),
                                  regime.seed)
        # Plain attributes, not buffers: checkpoints and DDP broadcasts must not carry the graph.
        self._graph = graph
        self._adj: Optional[dict] = None
        self._adj_device: Optional[torch.device] = None
        self._totals: dict = {}  # per edge type, the row totals of its full adjacency
        self.aggr = model_cfg.aggr
        # Users and books without a training interaction: their id embedding was never trained as
        # a positive, so with model.id_dropout they always get the unknown vector.
        book_counts = (torch.bincount(bundle.train[:, 1], minlength=bundle.num_books) if self.shard is None
                       else self.shard.book_train_counts)
        self._unseen = {USER: torch.bincount(bundle.train[:, 0], minlength=bundle.num_users) == 0,
                        BOOK: book_counts == 0}
        # model.path: the high-rank path term over each user's training items (models/paths.py).
        self.path = build_path_term(model_cfg, bundle, graph)
        self.path_decay, self.path_edge_lr = model_cfg.path.decay, model_cfg.path.edge_lr
        self._history = history_csr(bundle.train, bundle.num_users) if self.path is not None else None
        # train.softmax_negatives: a full-graph step's softmax competes with that many shared items,
        # drawn here so that the path term scores only those (PathTerm.restricted_scores).
        self.shared_negatives = regime.softmax_negatives if regime.loss == "softmax" else 0

    def check_device(self, device: torch.device) -> None:
        """``model.aggr=max`` aggregates with torch_sparse alone: a ConfigError before a run starts
        when it cannot run on ``device``, instead of a crash at the first validation."""
        if self.aggr in ("sum", "mean") or torch_sparse_serves(device):
            return
        why = ("torch-sparse is not installed" if not WITH_TORCH_SPARSE
               else f"the installed torch-sparse {torch_sparse.__version__} was built without CUDA")
        raise ConfigError(f"config key 'model.aggr={self.aggr}' needs torch_sparse on {device}, but {why}: "
                          f"install a torch-sparse built for this torch and device (README, 'Install by hand'), "
                          f"use model.aggr=mean or sum (torch's own sparse kernels), or pass dist.device=cpu")

    def use_context(self, ctx: DistContext) -> None:
        """The process group whose ranks hold the other users (``dist.sharding=users``)."""
        if self.shard is not None and self.shard.world_size != ctx.world_size:
            raise ValueError(f"the model holds users of a {self.shard.world_size}-rank shard, "
                             f"not of {ctx.world_size} ranks")
        self.dist = ctx

    def group_overrides(self) -> dict[str, dict[str, float]]:
        """Optimizer settings of the path term's per-edge offsets: their decay (``model.path.decay``;
        a free weight per edge would otherwise fit the training pairs, as an unregularised sparse
        item-item model does) and, with ``model.path.edge_lr``, a momentum-SGD step of their own
        (Adam with eps=1: the offsets' gradients are ~1e-4, so Adam's denominator is ~1)."""
        if self.path is None or self.path.delta is None:
            return {}
        own = {"weight_decay": self.path_decay}
        if self.path_edge_lr is not None:
            own.update(lr=self.path_edge_lr, eps=1.0)
        return {"path.delta": own}

    def owned_parameters(self) -> set[str]:
        """Names of the parameters whose rows are this rank's users alone (no gradient all-reduce;
        checkpointed per rank); empty unless ``dist.sharding=users`` with user id embeddings."""
        if self.shard is None or USER in self.encoder.shared:
            return set()
        return {f"encoder.emb.{USER}.weight"}

    def _partial(self, et: EdgeType) -> bool:
        """Whether relation ``et``'s aggregate is a sum over ranks (users on every rank send it)."""
        return self.shard is not None and et[0] == USER and et[2] != USER

    def _share(self, adj: dict) -> dict:
        """``adj`` with every relation from users wrapped as this rank's share (:class:`PartialAdj`)."""
        return {et: PartialAdj(a, self.dist) if self._partial(et) and isinstance(a, AdjPair) else a
                for et, a in adj.items()}

    def message_graph(self, bundle: Bundle):
        """The graph this model passes messages over (and the loader samples from): with
        ``model.co_items``, plus the co-interaction relation of ``bundle``'s training pairs."""
        graph = training_graph(bundle, self.user_book_only, self.exclude_relations)
        if self.co_items == 0:
            return graph
        if self._co_edges is None or self._co_edges[0] is not bundle.train:
            train = bundle.train.numpy()
            src, dst, w = co_interaction_edges(train[:, 0], train[:, 1], bundle.num_books, self.co_items)
            self._co_edges = (bundle.train, torch.from_numpy(np.stack([src, dst])), torch.from_numpy(w))
        graph = copy.copy(graph)  # a new edge type must not land in the bundle's own graph
        graph[CO_ITEMS].edge_index, graph[CO_ITEMS].edge_weight = self._co_edges[1], self._co_edges[2]
        return graph

    def full_adjacency(self, device: torch.device) -> dict:
        """The whole message graph per edge type, built once per device: CSR pairs for sum/mean
        aggregation (the fast path), SparseTensors with their transposes cached for max."""
        if self._adj is None or self._adj_device != device:
            g = self._graph
            if self.aggr in ("sum", "mean"):
                stats = {} if self.shard is None else self.shard.dst_stats
                self._adj = {et: bipartite_pair(g[et].edge_index, g[et].get("edge_weight") if self.use_edge_weight
                                                else None, int(g[et[0]].num_nodes), int(g[et[2]].num_nodes),
                                                self.aggr, device, stats.get(et)) for et in g.edge_types}
            else:
                self._adj = graph_adjacency(g, self.use_edge_weight, device, aggr=self.aggr)
                for adj in self._adj.values():
                    adj.fill_cache_()
            self._adj_device = device
            self._totals = {}
        return self._adj

    def shared_source_totals(self, et: EdgeType, pair: AdjPair, drop: Optional[Tensor]) -> RowTotals:
        """The cached :class:`RowTotals` of relation ``et`` (full graph), ``drop`` rows zeroed."""
        if et not in self._totals:
            total = row_totals(pair).total
            # A rank's share of the totals: one sum over ranks, once (the values are global).
            self._totals[et] = all_reduce_sum(total, self.dist) if self._partial(et) else total
        total = self._totals[et]
        return RowTotals(total if drop is None else total.masked_fill(drop, 0.0))

    def inputs(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        """Id embeddings as the first layer sees them (``model.emb_dropout`` while training)."""
        if self.emb_dropout == 0 or not self.training:
            return x
        return {nt: F.dropout(v, self.emb_dropout, training=True) for nt, v in x.items()}

    def scoring_vectors(self, user: Tensor, book: Tensor, book_ids: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Vectors whose dot products are the scores: normalised and temperature-scaled for cosine;
        with ``model.item_bias`` a constant 1 on the user side meets the book's learned bias
        (``book_ids``: the global ids of ``book``'s rows, None for every book in order)."""
        if self.cosine:
            user, book = F.normalize(user, dim=-1) / self.temperature, F.normalize(book, dim=-1)
        if self.item_bias is None:
            return user, book
        bias = self.item_bias if book_ids is None else self.item_bias[book_ids]
        return (torch.cat([user, user.new_ones(user.size(0), 1)], dim=1),
                torch.cat([book, bias.unsqueeze(1).to(book.dtype)], dim=1))

    def new_nodes(self, device: torch.device) -> dict[str, Tensor]:
        """Per id-embedded type, which nodes get the unknown vector: those without training
        interactions, and while training a random ``model.id_dropout`` share of the rest."""
        if not self.encoder.unknown:
            return {}
        out = {}
        for nt in self.encoder.unknown:
            mask = self._unseen[nt].to(device)
            if self.training:
                if nt == USER and self.shard is not None:
                    # Every rank draws for all users and keeps its own: the same users are
                    # dropped for any world size, and the global RNG stays in step across ranks.
                    draw = torch.rand(self.shard.num_users, device=device)[self.shard.start:self.shard.stop]
                else:
                    draw = torch.rand(mask.numel(), device=device)
                mask = mask | (draw < self.id_dropout)
            out[nt] = mask
        return out

    def encode_batch(self, batch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(input embeddings, output embeddings) of every node in a sampled HeteroData batch."""
        x = self.encoder.input_embeddings(batch.n_id_dict, self.new_nodes(batch[USER].n_id.device))
        adj = graph_adjacency(batch, self.use_edge_weight, x[USER].device, aggr=self.aggr)
        return x, self.encoder(self.inputs(x), adj, {})

    def bpr_forward(self, batch) -> BPROutput:
        if isinstance(batch, TripletBatch):
            return self.full_graph_forward(batch) if self.mode == "full_graph" else self.block_forward(batch)
        x, h = self.encode_batch(batch)
        src = batch[USER].src_index
        pos = batch[BOOK].dst_pos_index
        neg = batch[BOOK].dst_neg_index.view(len(src), -1)
        hu, hb = self.scoring_vectors(h[USER][src], h[BOOK], batch[BOOK].n_id)
        pos_score, neg_score = triplet_scores(hu, hb[pos], hb[neg])
        book_ids = batch[BOOK].n_id
        pos_score, neg_score, _ = self.with_path(batch[USER].n_id[src], book_ids[pos], book_ids[neg],
                                                 pos_score, neg_score, {})
        reg = ego_reg(x[USER][src], x[BOOK][pos], x[BOOK][neg], batch_size=len(src))
        return BPROutput(pos_score, neg_score, reg)

    def block_forward(self, batch: TripletBatch) -> BPROutput:
        """Sampled training on per-layer blocks (:mod:`graphrec_dist.models.block_sampler`): each layer
        computes only the rows the layer above reads, ending at the batch's users and books."""
        if self._block_sampler is None:
            self._block_sampler = BlockSampler(self._graph, self.encoder.layer_types, self.num_neighbors,
                                               self.use_edge_weight, self.aggr)
        device = batch.users.device
        users, books = torch.unique(batch.users), torch.unique(torch.cat([batch.pos, batch.neg.reshape(-1)]))
        exclude = (batch.users.cpu(), batch.pos.cpu()) if self.exclude_seed_edges else None
        start = time.perf_counter()
        blocks = self._block_sampler.sample({USER: users.cpu(), BOOK: books.cpu()},
                                            torch.Generator().manual_seed(batch.seed), exclude)
        self.last_sampling_s = time.perf_counter() - start  # train.profile_steps books it as sampling
        n_id = {nt: ids.to(device) for nt, ids in blocks.n_id.items()}
        x = self.encoder.input_embeddings(n_id, self.new_nodes(device))
        h = self.inputs(x)
        for i in range(len(self.encoder.layers)):
            adj = {et: AdjPair(a.adj_t.to(device), a.adj.to(device)) for et, a in blocks.adj[i].items()}
            out = self.encoder.layer(i, h, adj, {})
            h = {nt: out[nt][:n] for nt, n in blocks.num_out[i].items() if nt in out}
        # The seeds come first in every layer's node list, in torch.unique's (sorted) order.
        u = torch.searchsorted(users, batch.users)
        pos, neg = torch.searchsorted(books, batch.pos), torch.searchsorted(books, batch.neg)
        hu, hb = self.scoring_vectors(h[USER][u], h[BOOK], books)
        pos_score, neg_score = triplet_scores(hu, hb[pos], hb[neg])
        # Book ids are global, so the path term reads the global ones (its new mask: all books).
        pos_score, neg_score, _ = self.with_path(batch.users, batch.pos, batch.neg, pos_score, neg_score, {})
        reg = ego_reg(x[USER][u], x[BOOK][pos], x[BOOK][neg], batch_size=len(u))
        return BPROutput(pos_score, neg_score, reg)

    def with_path(self, users: Tensor, pos: Tensor, neg: Tensor, pos_score: Tensor, neg_score: Tensor,
                  new: dict[str, Tensor], shared: int = 0) -> tuple[Tensor, Tensor, Optional[RowScores]]:
        """(pos, neg) scores plus the path term, and its [n, num_books] scores of the batch rows
        (None without ``model.path``), kept once per distinct user: each user is scored from its
        training items less all of its positives in the batch. ``shared`` > 0: the softmax will
        compete with that many items drawn uniformly, drawn here, and the table holds only theirs."""
        if self.path is None:
            return pos_score, neg_score, None
        # The term runs on the CPU with the graph, in float32: a CUDA run's autocast never reaches
        # it, and debug.amp_on_cpu's must not either (its CSR kernel has no bf16).
        with torch.autocast("cpu", enabled=False):
            distinct, row = torch.unique(users.cpu(), return_inverse=True)
            exclude = torch.stack([row, pos.cpu()], dim=1)
            new_items = new.get(BOOK).cpu() if self.training and BOOK in new else None
            dropout = self.path.dropout if self.training else 0.0
            if shared > 0:
                drawn = torch.randint(self.path.num_items, (shared,))
                negs = neg.cpu().reshape(len(neg), -1)
                pairs = torch.cat([exclude, torch.stack([row.repeat_interleave(negs.size(1)), negs.flatten()], dim=1)])
                table, at = self.path.restricted_scores(*self._history, distinct, drawn, pairs, exclude, new_items,
                                                        dropout)
                at = at.to(users.device)
                extra = RowScores(table.to(users.device), row.to(users.device), drawn)
                return pos_score + at[:len(pos)], neg_score + at[len(pos):].view_as(neg_score), extra
            table = self.path.scores(*self._history, distinct, exclude, new_items, dropout).to(users.device)
            row = row.to(users.device)
            return pos_score + table[row, pos], neg_score + table[row.unsqueeze(1), neg], RowScores(table, row)

    def full_graph_forward(self, batch: TripletBatch) -> BPROutput:
        """The layers over the whole graph, then the batch's scores (and every book's vector).

        Only the batch's users are scored, so the last layer gives other users no messages: their
        rows are computed but unused, and the step costs their in-edges nothing. In training,
        ``model.history_dropout`` drops that share of the batch users' in-edges (their history and
        attributes) in the last layer, as a denoising autoencoder drops input items, and
        ``train.exclude_seed_edges`` removes each (user, positive) pair from that user's history,
        so a user is scored from the rest of their history, as at evaluation (the analogue of
        EASE's zero diagonal: no item predicts itself).
        """
        device = batch.users.device
        new = self.new_nodes(device)
        x = self.encoder.all_embeddings(new)
        full = self.full_adjacency(device)
        num_layers = len(self.encoder.layers)
        hidden = {et: new[BOOK] for et in (RATES, CO_ITEMS) if BOOK in new}  # a new book has no ratings
        users = torch.unique(batch.users)
        # A relation from a type without id embeddings (one shared vector) at the first layer is
        # its row totals times that vector: no edge is touched (emb_dropout would vary the rows).
        shared = self.encoder.shared if self.emb_dropout == 0 else set()
        dropped: dict[EdgeType, AdjPair] = {}
        per_layer = []
        for i in range(num_layers):
            adj = {}
            for et, pair in full.items():
                if not isinstance(pair, AdjPair):  # max aggregation: SparseTensors, as they are
                    adj[et] = pair
                elif i == 0 and et[0] in shared:
                    adj[et] = self.shared_source_totals(et, pair, hidden.get(et))
                else:
                    if et in hidden and et not in dropped:
                        dropped[et] = drop_rows(pair, hidden[et])
                    adj[et] = dropped.get(et, pair)
                    if i == num_layers - 1 and et[2] == USER:
                        # Only the batch's users are scored: other users get no messages.
                        keep = 1.0 - self.history_dropout if self.training else 1.0
                        seeds = (batch.users, batch.pos) if self.exclude_seed_edges and et == REV_RATES else None
                        adj[et] = restrict_rows(adj[et], users, keep, seeds)
            per_layer.append(self._share(adj))
        h = self.inputs(x)
        for i in range(num_layers):
            h = self.encoder.layer(i, h, per_layer[i], {})
        hu, hb = self.scoring_vectors(h[USER][batch.users], h[BOOK])
        pos_score, neg_score = triplet_scores(hu, hb[batch.pos], hb[batch.neg])
        shared = self.shared_negatives if self.training else 0
        pos_score, neg_score, extra = self.with_path(batch.users, batch.pos, batch.neg, pos_score, neg_score, new,
                                                     shared)
        reg = ego_reg(x[USER][batch.users], x[BOOK][batch.pos], x[BOOK][batch.neg], batch_size=len(batch.users))
        return BPROutput(pos_score, neg_score, reg, hu, hb, extra)

    def forward(self, batch) -> BPROutput:
        return self.bpr_forward(batch)

    @torch.no_grad()
    def embed_all(self, bundle: Bundle, ctx: DistContext) -> dict[str, Tensor]:
        """GNN output for every user and book: full-neighbourhood layer-wise inference.

        Each layer runs full-batch over a sparse adjacency (no per-edge messages are
        materialised, so memory is O(nodes x dim + edges)); every rank computes a contiguous
        block of each node type's rows and the blocks are all-gathered before the next layer.
        A user shard (``dist.sharding=users``) instead runs the whole-graph layers with relations
        from users summed over ranks, and keeps its own users' outputs and every item's.
        """
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        if self.shard is not None:
            self.use_context(ctx)
            adj = self._share(self.full_adjacency(device))
        else:
            adj = graph_adjacency(self.message_graph(bundle), self.use_edge_weight, device, ctx, self.aggr)
        x = self.encoder.all_embeddings(self.new_nodes(device))
        layer_inputs = []
        for i in range(len(self.encoder.layers)):
            layer_inputs.append(x)
            x = self.encoder.layer(i, x, adj, {})
            if self.shard is None:
                x = {nt: all_gather_rows(hv[shard(len(hv), ctx.rank, ctx.world_size)], len(hv), ctx)
                     for nt, hv in x.items()}
        self.train(was_training)
        self._layer_inputs = layer_inputs  # fold-in of new users reads them (history_scorer)
        return x

    @torch.no_grad()
    def scorer(self, bundle: Bundle, ctx) -> EmbeddingScorer | PathScorer:
        out = self.embed_all(bundle, ctx)
        return self._scorer(out[USER], out[BOOK], self._history)

    def _scorer(self, user: Tensor, book: Tensor, history) -> EmbeddingScorer | PathScorer:
        """Dot products of the outputs, plus (``model.path``) the path term of ``history``."""
        vectors = self.scoring_vectors(user, book)
        return EmbeddingScorer(*vectors) if self.path is None else PathScorer(*vectors, self.path, history)


def build(cfg, bundle: Bundle) -> GraphSAGERecommender:
    """Registry entry: ``graphsage`` (all of Graph3) or ``graphsage_ui`` (user-book only), built from
    the model section of ``cfg`` and the training regime its train section sets."""
    return GraphSAGERecommender(bundle, cfg.model, TrainingRegime.from_train(cfg.train),
                                user_book_only=cfg.model.name == "graphsage_ui")
