"""content_knn: items scored by their content similarity to the user's history; no learning.

The honest reference for the cold-item protocol (docs/EVALUATION.md): it needs no interaction of
the item it scores, only its side relations. For each item -> value relation of the graph (tags,
authors, genres, year bins, ...) an item's row of values is weighted by inverse document frequency
(``log(num_items / items with the value)``, so a value every item has says nothing) and scaled to
unit length; the relation's similarity is the cosine of those rows. Every relation, and the
item-item TF-IDF similarity edges (already cosines), counts with weight 1:

    K = sum_r cos_r + sim,  K_ii = 0,  score(u, i) = sum_{j in history(u)} K_ji

K is ``num_items²`` float32 (0.4 GB at 10k items), rebuilt from the bundle by ``fit``; it is not
saved in checkpoints.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from graphrec_dist.data.bundle import BOOK, SIMILAR, USER, Bundle
from graphrec_dist.models.base import Recommender, Scorer
from graphrec_dist.models.ease import EaseScorer, interaction_matrix


def relation_cosine(edge_index: torch.Tensor, weight: torch.Tensor | None, num_items: int,
                    num_values: int) -> torch.Tensor:
    """float32 [num_items, num_items]: cosine of the items' IDF-weighted rows of one relation."""
    items, values = edge_index[0].long(), edge_index[1].long()
    w = torch.ones(items.numel()) if weight is None else weight.float().clone()
    rows = torch.zeros(num_items, num_values)
    rows.index_put_((items, values), w, accumulate=True)
    df = (rows > 0).sum(dim=0).clamp_min(1).float()
    rows *= torch.log(num_items / df).unsqueeze(0)
    rows = torch.nn.functional.normalize(rows, dim=1)
    return rows @ rows.T


def content_similarity(bundle: Bundle) -> torch.Tensor:
    """K of the module docstring for ``bundle``'s graph."""
    g, n = bundle.graph, bundle.num_books
    sim = torch.zeros(n, n)
    for et in g.edge_types:
        src, _, dst = et
        if src == BOOK and dst not in (USER, BOOK):
            sim += relation_cosine(g[et].edge_index, g[et].get("edge_weight"), n, int(g[dst].num_nodes))
    if SIMILAR in g.edge_types:
        ei, w = g[SIMILAR].edge_index, g[SIMILAR].get("edge_weight")
        sim.index_put_((ei[0].long(), ei[1].long()), torch.ones(ei.shape[1]) if w is None else w.float(),
                       accumulate=True)
    sim.fill_diagonal_(0.0)
    return sim


class ContentKNN(Recommender):
    """Closed form: ``fit`` builds the item-item content similarity K."""

    kind: ClassVar[str] = "closed_form"
    scores_new_users: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.similarity: torch.Tensor | None = None  # not a buffer: rebuilt from the bundle, never saved

    def fit(self, bundle: Bundle, ctx) -> None:
        self.similarity = content_similarity(bundle)

    def _weights(self, bundle: Bundle) -> torch.Tensor:
        if self.similarity is None or self.similarity.shape[0] != bundle.num_books:
            self.fit(bundle, None)
        return self.similarity

    @torch.no_grad()
    def scorer(self, bundle: Bundle, ctx) -> Scorer:
        return EaseScorer(interaction_matrix(bundle), self._weights(bundle))

    @torch.no_grad()
    def history_scorer(self, bundle: Bundle, history: tuple, ctx) -> Scorer:
        return EaseScorer(interaction_matrix(bundle, history), self._weights(bundle))


def build(cfg, bundle: Bundle) -> ContentKNN:
    """The registry entry for ``model.name=content_knn``."""
    return ContentKNN()
