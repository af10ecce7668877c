"""What every recommender offers the trainer and the evaluator.

Three kinds share one trainer:
- ``sampled``: a GNN trained on LinkNeighborLoader subgraphs (graphsage, graphsage_ui);
- ``triplet``: trained on plain (user, positive, negatives) index batches (mf, lightgcn);
- ``closed_form``: fitted once, no gradient steps (popularity, ease).
All of them hand the evaluator a :class:`Scorer`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Optional, Protocol

import torch
from torch_geometric.data import HeteroData

from graphrec_dist.data.bundle import RATES, REV_RATES, Bundle, edge_types_without
from graphrec_dist.errors import ConfigError

ModelKind = Literal["sampled", "triplet", "closed_form"]


@dataclass
class TripletBatch:
    """A ``triplet`` model's training batch: global user/book indices."""

    users: torch.Tensor  # int64 [n]
    pos: torch.Tensor  # int64 [n]
    neg: torch.Tensor  # int64 [n, k]
    seed: int = 0  # seeds the model's own randomness for this batch (block sampling)
    # dist.sharding=users: the rows of the batch on all ranks together (a rank holds its users'
    # rows only, and its loss is its share of the mean over all of them); 0 = these rows are all.
    total: int = 0

    def to(self, device: torch.device) -> TripletBatch:
        return TripletBatch(self.users.to(device), self.pos.to(device), self.neg.to(device), self.seed, self.total)


@dataclass(frozen=True)
class RowScores:
    """[n, num_items] scores kept once per distinct row: batch row r is ``table[index[r]]``. A batch
    holds several positives of a user, whose rows are equal; gathering the table out to n rows
    and back per distinct user would copy [n x num_items] twice each way, for nothing."""

    table: torch.Tensor  # float [m, num_items] (or [m, len(columns)])
    index: torch.Tensor  # int64 [n], values in [0, m)
    # The items of the table's columns where it holds only some (a shared softmax's draws; see
    # PathTerm.restricted_scores); None: every item, in order.
    columns: Optional[torch.Tensor] = None

    def rows(self) -> torch.Tensor:
        """The [n, num_items] rows themselves."""
        return self.table[self.index]

    def at(self, rows: torch.Tensor) -> torch.Tensor:
        """The table rows of batch rows ``rows``, with no copy where they are the table's own order."""
        which = self.index[rows]
        if len(which) == len(self.table) and torch.equal(which, torch.arange(len(which), device=which.device)):
            return self.table
        return self.table[which]


@dataclass
class BPROutput:
    """What the ranking losses need from a model's forward pass on one batch.

    Models that compute every item's output embedding in a step (mf, lightgcn, full-graph
    graphsage) also return ``user`` and ``items``, with ``user @ items.T`` the batch users' scores
    of every item: the full softmax loss uses them.
    """

    pos: torch.Tensor  # float [n] scores of (user, positive)
    neg: torch.Tensor  # float [n, k] scores of (user, negatives)
    reg: torch.Tensor  # float scalar: sum of squared input embeddings used by the batch / n
    user: Optional[torch.Tensor] = None  # float [n, d] the batch users' scoring vectors
    items: Optional[torch.Tensor] = None  # float [num_items, d] every item's scoring vector
    # [n, num_items] a score added to ``user @ items.T`` (graphsage's path term), or None
    extra: Optional[RowScores] = None


def training_graph(bundle: Bundle, user_book_only: bool = False, exclude: Sequence[str] = ()) -> HeteroData:
    """The message-passing graph: all of Graph3 less the side relations named in ``exclude``
    (``model.exclude_relations``), or only user->book and its reverse."""
    if user_book_only:
        return bundle.graph.edge_type_subgraph([RATES, REV_RATES])
    if not exclude:
        return bundle.graph
    return bundle.graph.edge_type_subgraph(edge_types_without(bundle.graph.edge_types, exclude))


class Scorer(Protocol):
    """Scores users against every book; the evaluator only ever sees this."""

    num_items: int

    def scores(self, users: torch.Tensor) -> torch.Tensor:
        """float32 [len(users), num_items] scores (higher = better)."""
        ...


class EmbeddingScorer:
    """Dot product of user and item embedding tables (the GNN outputs, MF, LightGCN)."""

    def __init__(self, user_emb: torch.Tensor, item_emb: torch.Tensor):
        self.user_emb = user_emb
        self.item_emb = item_emb
        self.num_items = int(item_emb.shape[0])

    def scores(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb[users.to(self.user_emb.device)] @ self.item_emb.T


class Recommender(torch.nn.Module):
    """Base class: subclasses set ``kind`` and implement what their kind needs."""

    kind: ClassVar[ModelKind]

    def check_device(self, device: torch.device) -> None:
        """A ConfigError when this model, as configured, cannot run on ``device`` (a missing kernel)."""

    def bpr_forward(self, batch) -> BPROutput:
        """``sampled``: a LinkNeighborLoader HeteroData batch; ``triplet``: a TripletBatch."""
        raise NotImplementedError(f"{type(self).__name__} is not trained by gradient steps")

    def message_graph(self, bundle):
        """``sampled``: the HeteroData graph the loader samples subgraphs from."""
        raise NotImplementedError(f"{type(self).__name__} is not trained on sampled subgraphs")

    def fit(self, bundle, ctx) -> None:
        """Closed-form models compute their parameters here (called once on every rank)."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form fit")

    @torch.no_grad()
    def scorer(self, bundle, ctx) -> Scorer:
        """A scorer over all users and books (GNNs run full-neighbourhood inference here)."""
        raise NotImplementedError

    # Whether ``history_scorer`` works: the model scores a user it was not trained on from a history.
    scores_new_users: ClassVar[bool] = False

    @torch.no_grad()
    def history_scorer(self, bundle, history: tuple, ctx) -> Scorer:
        """A scorer of users from ``history`` = (indptr [U+1], items) instead of their training
        interactions: nothing is trained; a user's row is whatever the history says."""
        raise ConfigError(f"{type(self).__name__} cannot score a user outside its training data without "
                          "retraining (models that can: graphsage, graphsage_ui, ease, ease_content, rp3beta, "
                          "popularity, content_knn)")
