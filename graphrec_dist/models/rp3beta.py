"""rp3beta (Paudel et al., 2017; found hard to beat by Dacrema et al., 2019): item-item weights from a
3-step random walk item -> user -> item, with popular targets damped.

With X the binary user x book training matrix, ``P_ui = X / |N(u)|`` (a user's step to one of
their items) and ``P_iu = Xᵀ / |N(i)|`` (an item's step to one of its users):

    W = (P_iu^α · P_ui^α) · diag(|N(j)|^-β),  W_jj = 0,

powers taken element by element, then only each target item j's ``top_k`` largest source weights
kept (as Dacrema et al.'s reference code does). A user's scores are ``X_u·W``. The weights are
built one block of target columns at a time, so memory is O(items × top_k) beyond one block.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from graphrec_dist.data.bundle import Bundle
from graphrec_dist.models.base import Recommender, Scorer
from graphrec_dist.models.ease import interaction_matrix

COLUMN_BLOCK = 2048  # target items per dense block of W


def rp3_topk(x: sp.csr_matrix, alpha: float, beta: float, top_k: int,
             block: int = COLUMN_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """(sources int64 [num_items, k], weights float32 [num_items, k]): target item j's k largest
    ``W_ij`` and their i, k = min(top_k, num_items)."""
    n = x.shape[1]
    k = min(top_k, n)
    user_deg = np.maximum(x.getnnz(axis=1), 1).astype(np.float64)
    item_deg = np.maximum(x.getnnz(axis=0), 1).astype(np.float64)
    p_ui = (sp.diags(user_deg ** -alpha) @ x).tocsc()  # (1/|N(u)|)^α at each of u's items
    p_iu = (sp.diags(item_deg ** -alpha) @ x.T).tocsr()  # (1/|N(i)|)^α at each of i's users
    sources = torch.empty(n, k, dtype=torch.long)
    weights = torch.empty(n, k, dtype=torch.float32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        w = torch.from_numpy((p_iu @ p_ui[:, start:stop]).toarray())  # [n sources, block targets]
        w *= torch.from_numpy(item_deg[start:stop] ** -beta).unsqueeze(0)
        w[torch.arange(start, stop), torch.arange(stop - start)] = 0.0
        top = torch.topk(w, k, dim=0)
        sources[start:stop] = top.indices.T
        weights[start:stop] = top.values.T.float()
    return sources, weights


class Rp3Scorer:
    """``X_u·W`` for a chunk of users, W sparse (each target's top-k sources)."""

    def __init__(self, x: sp.csr_matrix, sources: torch.Tensor, weights: torch.Tensor):
        n, k = sources.shape
        targets = np.repeat(np.arange(n), k)
        self.w = sp.csr_matrix((weights.numpy().ravel(), (sources.numpy().ravel(), targets)), shape=(n, n))
        self.x = x
        self.num_items = n

    def scores(self, users: torch.Tensor) -> torch.Tensor:
        rows = self.x[users.cpu().numpy()]
        return torch.from_numpy((rows @ self.w).toarray().astype(np.float32))


class Rp3Beta(Recommender):
    """Closed form: ``fit`` builds each item's top-k walk weights."""

    kind: ClassVar[str] = "closed_form"
    scores_new_users: ClassVar[bool] = True

    def __init__(self, alpha: float, beta: float, top_k: int):
        super().__init__()
        self.alpha, self.beta, self.top_k = alpha, beta, top_k
        # Empty until fit (or a checkpoint) fills them.
        self.register_buffer("sources", torch.empty(0, 0, dtype=torch.long))
        self.register_buffer("weights", torch.empty(0, 0))

    def fit(self, bundle: Bundle, ctx) -> None:
        self.sources, self.weights = rp3_topk(interaction_matrix(bundle), self.alpha, self.beta, self.top_k)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args, **kwargs) -> None:
        # The buffers' shapes are only known after fit; take the checkpoint's before the shape check.
        for name in ("sources", "weights"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _scorer(self, x: sp.csr_matrix) -> Scorer:
        if self.weights.numel() == 0:
            raise RuntimeError("rp3beta scorer requested before fit() or loading a checkpoint")
        return Rp3Scorer(x, self.sources.cpu(), self.weights.cpu())

    @torch.no_grad()
    def scorer(self, bundle: Bundle, ctx) -> Scorer:
        return self._scorer(interaction_matrix(bundle))

    @torch.no_grad()
    def history_scorer(self, bundle: Bundle, history: tuple, ctx) -> Scorer:
        """``X_u·W`` with the given history as ``X_u``: W does not depend on the user."""
        return self._scorer(interaction_matrix(bundle, history))


def build(cfg, bundle: Bundle) -> Rp3Beta:
    """The registry entry for ``model.name=rp3beta``."""
    r = cfg.model.rp3
    return Rp3Beta(r.alpha, r.beta, r.top_k)
