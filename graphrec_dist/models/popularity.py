"""Popularity: every user gets the books ranked by how often they were rated in training.

The non-personalised floor every other model must beat. The evaluator counts tied scores against
the model, so scores are the books' positions in count order with ties broken by a fixed random
permutation (seed ``TIE_SEED``): a served top-k list must pick some order among equal counts, and a
random one is neither favoured by nor penalised for the ties. (Breaking ties by book index would
not be neutral: Goodbooks ids themselves follow popularity.)
"""
from __future__ import annotations

from typing import ClassVar

import torch

from graphrec_dist.data.bundle import Bundle
from graphrec_dist.models.base import Recommender, Scorer

TIE_SEED = 0


def book_counts(train: torch.Tensor, num_books: int) -> torch.Tensor:
    """float32 [num_books]: how many training (user, book) rows name each book."""
    return torch.bincount(train[:, 1].long(), minlength=num_books).to(torch.float32)


def tie_broken_scores(counts: torch.Tensor, seed: int = TIE_SEED) -> torch.Tensor:
    """float32 [n]: distinct scores 1..n ordered by count, ties in a seeded random order.

    Integers up to 2**24 are exact in float32, so no two books share a score.
    """
    n = counts.shape[0]
    shuffled = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    # A stable sort of a shuffled list by count: equal counts keep the random order.
    order = shuffled[torch.argsort(counts.detach().cpu()[shuffled], stable=True)]
    scores = torch.empty(n, dtype=torch.float32)
    scores[order] = torch.arange(1, n + 1, dtype=torch.float32)
    return scores.to(counts.device)


class PopularityScorer:
    """The same score vector for every user (a fresh tensor per call: callers may mask it)."""

    def __init__(self, scores: torch.Tensor):
        self.book_scores = scores
        self.num_items = int(scores.shape[0])

    def scores(self, users: torch.Tensor) -> torch.Tensor:
        return self.book_scores.unsqueeze(0).repeat(len(users), 1)


class Popularity(Recommender):
    """Closed form: ``fit`` counts training interactions per book."""

    kind: ClassVar[str] = "closed_form"

    def __init__(self, num_books: int):
        super().__init__()
        self.register_buffer("counts", torch.zeros(num_books, dtype=torch.float32))

    def fit(self, bundle: Bundle, ctx) -> None:
        """Count each book's training interactions (the same on every rank: no communication)."""
        counts = book_counts(bundle.train, bundle.num_books)
        self.counts.copy_(counts.to(self.counts.device))

    @torch.no_grad()
    def scorer(self, bundle: Bundle, ctx) -> Scorer:
        return PopularityScorer(tie_broken_scores(self.counts))

    scores_new_users: ClassVar[bool] = True

    @torch.no_grad()
    def history_scorer(self, bundle: Bundle, history: tuple, ctx) -> Scorer:
        """The same list for everyone: a history changes nothing but what is masked."""
        return self.scorer(bundle, ctx)


def build(cfg, bundle: Bundle) -> Popularity:
    """The registry entry for ``model.name=popularity``."""
    return Popularity(bundle.num_books)
