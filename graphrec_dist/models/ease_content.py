"""ease_content: EASE's scores plus the user's history's text similarity to each item; no message passing.

    score(u, i) = X_u·B  +  w · |N(u)|^-a · Σ_{j ∈ N(u)} sim(j, i)

B is EASE's (or EDLAE's) item-item solution on the training pairs (:mod:`graphrec_dist.models.ease`),
``sim`` the weights of Graph3's TF-IDF ``similar`` book-book edges, summed over the user's training
items and divided by |history|^a as graphsage's path term does. ``model.content.weight`` (w) and
``model.content.norm`` (a) are chosen on validation with λ by ``graphrec-dist tune``.

It uses the signals graphsage uses (interactions and item text) without learning anything by
gradient: the bar the GNN's message passing has to clear. Through the text part it also scores
items with no training interaction (the cold-item protocol), which EASE alone gives 0.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from graphrec_dist.data.bundle import Bundle
from graphrec_dist.models.base import Scorer
from graphrec_dist.models.ease import Ease, EaseScorer, interaction_matrix
from graphrec_dist.models.paths import path_relations


def text_similarity(bundle: Bundle) -> sp.csr_matrix:
    """float32 CSR [num_books, num_books]: the ``similar`` edges' weights, row = the history's item
    (empty for a dataset without item text)."""
    src, dst, w = path_relations(bundle, ["similar"], top_k=1)["similar"]
    n = bundle.num_books
    return sp.csr_matrix((w.numpy().astype(np.float32), (src.numpy(), dst.numpy())), shape=(n, n))


class BlendScorer:
    """``X_u·B + w·|N(u)|^-a·X_u·S`` for a chunk of users, from their sparse rows."""

    def __init__(self, x: sp.csr_matrix, weights: torch.Tensor, sim: sp.csr_matrix, weight: float, norm: float):
        self.ease = EaseScorer(x, weights)
        self.x, self.sim, self.weight, self.norm = x, sim, weight, norm
        self.num_items = self.ease.num_items

    def scores(self, users: torch.Tensor) -> torch.Tensor:
        out = self.ease.scores(users)
        if self.weight == 0 or self.sim.nnz == 0:
            return out
        rows = self.x[users.cpu().numpy()]
        scale = self.weight * np.maximum(rows.getnnz(axis=1), 1).astype(np.float32) ** -self.norm
        text = sp.diags(scale) @ rows @ self.sim
        return out + torch.from_numpy(text.toarray().astype(np.float32)).to(out.device)


class EaseContent(Ease):
    """EASE (``fit`` solves for B) with the text term added at scoring time."""

    scores_new_users: ClassVar[bool] = True

    def __init__(self, lam: float, dropout: float, weight: float, norm: float):
        super().__init__(lam, dropout)
        self.weight, self.norm = weight, norm

    def _scorer(self, bundle: Bundle, x: sp.csr_matrix) -> Scorer:
        if self.weights.numel() == 0:
            raise RuntimeError("ease_content scorer requested before fit() or loading a checkpoint")
        return BlendScorer(x, self.weights, text_similarity(bundle), self.weight, self.norm)

    @torch.no_grad()
    def scorer(self, bundle: Bundle, ctx) -> Scorer:
        return self._scorer(bundle, interaction_matrix(bundle))

    @torch.no_grad()
    def history_scorer(self, bundle: Bundle, history: tuple, ctx) -> Scorer:
        return self._scorer(bundle, interaction_matrix(bundle, history))


def build(cfg, bundle: Bundle) -> EaseContent:
    """The registry entry for ``model.name=ease_content``."""
    m = cfg.model
    return EaseContent(m.ease_lambda, m.ease_dropout, m.content.weight, m.content.norm)
