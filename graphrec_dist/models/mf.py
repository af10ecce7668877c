"""BPR matrix factorisation (Rendle et al., 2009): one embedding per user and per book.

Score = dot product of the two embeddings. Trained by the shared trainer on (user, positive,
negatives) index batches; the L2 term is the batch's squared embeddings over the batch size,
the same convention as LightGCN, so ``train.l2`` means the same thing for both.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from graphrec_dist.data.bundle import Bundle
from graphrec_dist.models.base import BPROutput, EmbeddingScorer, Recommender, Scorer, TripletBatch

INIT_STD = 0.1  # normal(0, 0.1) initialisation, as in the BPR/LightGCN reference code


def triplet_scores(user_emb: torch.Tensor, pos_emb: torch.Tensor, neg_emb: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Dot-product scores: ``user_emb`` [n, d], ``pos_emb`` [n, d], ``neg_emb`` [n, k, d].

    Always float32, autocast or not: a loss compares scores that differ by little (bf16 keeps
    ~3 digits, so a cosine / 0.2 score of ~4 would move in steps of 0.03)."""
    with torch.autocast(user_emb.device.type, enabled=False):
        user = user_emb.float()
        pos = (user * pos_emb.float()).sum(-1)
        neg = torch.einsum("nd,nkd->nk", user, neg_emb.float())
    return pos, neg


def ego_reg(*embs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Sum of squared input (layer-0) embeddings used by the batch, divided by the batch size."""
    return sum(e.pow(2).sum() for e in embs) / batch_size


class MatrixFactorization(Recommender):
    """Triplet model: user and book embedding tables."""

    kind: ClassVar[str] = "triplet"

    def __init__(self, num_users: int, num_books: int, dim: int):
        super().__init__()
        self.user_emb = torch.nn.Embedding(num_users, dim)
        self.book_emb = torch.nn.Embedding(num_books, dim)
        torch.nn.init.normal_(self.user_emb.weight, std=INIT_STD)
        torch.nn.init.normal_(self.book_emb.weight, std=INIT_STD)

    def forward(self, batch: TripletBatch) -> BPROutput:
        """Calling the model runs the BPR forward (the trainer calls ``bpr_forward`` directly)."""
        return self.bpr_forward(batch)

    def bpr_forward(self, batch: TripletBatch) -> BPROutput:
        u = self.user_emb(batch.users)
        p = self.book_emb(batch.pos)
        n = self.book_emb(batch.neg)
        pos, neg = triplet_scores(u, p, n)
        return BPROutput(pos, neg, ego_reg(u, p, n, batch_size=len(batch.users)), u, self.book_emb.weight)

    @torch.no_grad()
    def scorer(self, bundle: Bundle, ctx) -> Scorer:
        return EmbeddingScorer(self.user_emb.weight.detach(), self.book_emb.weight.detach())


def build(cfg, bundle: Bundle) -> MatrixFactorization:
    """The registry entry for ``model.name=mf``."""
    return MatrixFactorization(bundle.num_users, bundle.num_books, cfg.model.emb_dim)
