"""EASE (Steck, 2019): a closed-form item-item linear autoencoder, a strong non-neural reference.

With X the binary user x book training matrix:
``P = (XᵀX + λI)⁻¹``, ``B = I − P·diag(1/diag(P))`` (so ``B_ij = −P_ij / P_jj`` off the diagonal
and ``B_jj = 0``), and a user's scores are ``X_u·B``.

``model.ease_dropout`` = p > 0 is EDLAE (Steck, 2020, "Autoencoders that don't overfit towards the
identity"): training on inputs with dropout p amounts to the penalty ``Λ = λI + p/(1−p)·diag(XᵀX)``
in place of ``λI``, so popular items' weights shrink more; p = 0 is EASE.

Precision: the Gram matrix (co-counts) is accumulated in float64, then ``XᵀX + Λ`` is factored and
inverted in float32 (Cholesky: it is symmetric positive definite for λ > 0). On real Goodbooks
(7,770 books) that is 2.1-2.3x faster than float64 and B differs from the float64 solution by at
most 5e-6 at λ = 3 (8e-7 at λ = 30; largest weight 0.6): what makes tuning λ on every split
affordable. Peak memory of ``fit`` is one float64 and two float32 ``num_books²`` matrices (1.6 GB
at 10k books) plus the sparse X; B then holds ``4·num_books²`` bytes (0.4 GB at 10k books).
Scoring multiplies each user chunk's sparse rows of X by B, so it costs ``nnz(chunk)·num_books``
rather than ``len(chunk)·num_books²``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from graphrec_dist.data.bundle import Bundle
from graphrec_dist.models import fit_cache
from graphrec_dist.models.base import Recommender, Scorer

GRAM_BLOCK = 2048  # books per column block of XᵀX, bounding the sparse product's transient memory


def interaction_matrix(bundle: Bundle, history: tuple | None = None) -> sp.csr_matrix:
    """Binary float32 CSR [num_users, num_books] of the training pairs (duplicates count once),
    or of ``history`` = (indptr, items) when given."""
    indptr, indices = history if history is not None else bundle.train_csr()
    data = np.ones(len(indices), dtype=np.float32)
    x = sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, bundle.num_books))
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


def gram_matrix(x: sp.csr_matrix, block: int = GRAM_BLOCK) -> np.ndarray:
    """Dense float64 XᵀX, built one column block at a time from sparse products."""
    n = x.shape[1]
    xt = x.T.tocsr().astype(np.float64)
    xc = x.tocsc().astype(np.float64)
    gram = np.empty((n, n), dtype=np.float64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        gram[:, start:stop] = (xt @ xc[:, start:stop]).toarray()
    return gram


def ease_weights(gram: torch.Tensor, lam: float, dropout: float = 0.0) -> torch.Tensor:
    """B from a Gram matrix (left as it is: the solve works on a float32 copy)."""
    a = gram.to(torch.float32, copy=True)
    a.diagonal().mul_(1.0 + dropout / (1.0 - dropout)).add_(lam)
    chol = torch.linalg.cholesky(a)
    del a
    p = torch.cholesky_inverse(chol)
    del chol
    p.div_(-p.diagonal().clone().unsqueeze(0))  # column j divided by -P_jj
    p.diagonal().zero_()
    # LAPACK hands back a column-major P; row-major B makes each scoring matmul ~15x faster.
    return p.contiguous()


def solve_weights(bundle: Bundle, lam: float, dropout: float, device: torch.device) -> torch.Tensor:
    """B for ``bundle``'s training pairs; inside :func:`fit_cache.fit_cache` the Gram matrix and
    each (λ, p)'s B are computed once for all the grid points that share them."""
    if not fit_cache.active():
        return ease_weights(torch.from_numpy(gram_matrix(interaction_matrix(bundle))).to(device), lam, dropout)
    key = bundle.content_hash()
    gram = fit_cache.cached((key, "gram"), lambda: torch.from_numpy(gram_matrix(interaction_matrix(bundle))))
    return fit_cache.cached((key, "ease", lam, dropout, str(device)),
                            lambda: ease_weights(gram.to(device), lam, dropout))


class EaseScorer:
    """Scores ``X_u·B`` for a chunk of users, from their sparse training rows."""

    def __init__(self, x: sp.csr_matrix, weights: torch.Tensor):
        self.x = x
        self.weights = weights
        self.num_items = int(weights.shape[1])

    def scores(self, users: torch.Tensor) -> torch.Tensor:
        rows = self.x[users.cpu().numpy()].tocoo()
        index = torch.from_numpy(np.vstack([rows.row, rows.col]).astype(np.int64))
        xu = torch.sparse_coo_tensor(index, torch.from_numpy(rows.data), size=rows.shape,
                                     check_invariants=False, is_coalesced=True)
        return torch.sparse.mm(xu.to(self.weights.device), self.weights)


class Ease(Recommender):
    """Closed form: ``fit`` solves for the item-item weights B once."""

    kind: ClassVar[str] = "closed_form"

    def __init__(self, lam: float, dropout: float = 0.0):
        super().__init__()
        self.lam = lam
        self.dropout = dropout
        # Empty until fit (or a checkpoint) fills it: a num_books² placeholder would cost 0.4 GB.
        self.register_buffer("weights", torch.empty(0, 0))

    def fit(self, bundle: Bundle, ctx) -> None:
        """Solve for B (the same on every rank, so no communication is needed)."""
        self.weights = solve_weights(bundle, self.lam, self.dropout, self.weights.device)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args, **kwargs) -> None:
        # B's shape is only known after fit; take the checkpoint's shape before the shape check.
        key = prefix + "weights"
        if key in state_dict:
            self.weights = torch.empty_like(state_dict[key], device=self.weights.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def scorer(self, bundle: Bundle, ctx) -> Scorer:
        if self.weights.numel() == 0:
            raise RuntimeError("EASE scorer requested before fit() or loading a checkpoint")
        return EaseScorer(interaction_matrix(bundle), self.weights)

    scores_new_users: ClassVar[bool] = True

    @torch.no_grad()
    def history_scorer(self, bundle: Bundle, history: tuple, ctx) -> Scorer:
        """``X_u·B`` with the given history as ``X_u``: B does not depend on the user."""
        if self.weights.numel() == 0:
            raise RuntimeError("EASE scorer requested before fit() or loading a checkpoint")
        return EaseScorer(interaction_matrix(bundle, history), self.weights)


def build(cfg, bundle: Bundle) -> Ease:
    """The registry entry for ``model.name=ease``."""
    return Ease(cfg.model.ease_lambda, cfg.model.ease_dropout)
