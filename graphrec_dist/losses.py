"""Loss functions: pure, batch-level, easy to check by hand."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from graphrec_dist.models.base import RowScores
from graphrec_dist.models.sparse import csr_rows


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Mean BPR loss ``-log sigmoid(s_pos - s_neg)`` over every (positive, negative) pair.

    ``pos``: [n] scores of (user, positive); ``neg``: [n, k] (or [n]) scores of (user, negative).
    ``softplus(-x)`` is ``-log sigmoid(x)`` without overflow for large margins.
    """
    if neg.dim() == 1:
        neg = neg.unsqueeze(1)
    if neg.shape[0] != pos.shape[0]:
        raise ValueError(f"bpr_loss: {pos.shape[0]} positives but {neg.shape[0]} rows of negatives")
    return F.softplus(neg - pos.unsqueeze(1)).mean()


def sampled_softmax_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each positive against its own sampled negatives.

    ``pos``: [n] scores, ``neg``: [n, k] scores; the positive is class 0 of ``[pos, neg]``.
    """
    if neg.dim() == 1:
        neg = neg.unsqueeze(1)
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long, device=pos.device))


def full_softmax_loss(user: torch.Tensor, items: torch.Tensor, pos_items: torch.Tensor,
                      user_ids: torch.Tensor | None = None,
                      seen: tuple[torch.Tensor, torch.Tensor] | None = None,
                      extra: RowScores | None = None) -> torch.Tensor:
    """Mean cross-entropy of each (user, positive item) against every item.

    ``user``: [n, d], ``items``: [num_items, d] scoring vectors (scores = ``user @ items.T``);
    ``pos_items``: int64 [n] the positive item of each row. ``user_ids`` (int64 [n], rows with the
    same id must have the same vector): the softmax is computed once per distinct user, which is
    the same loss with fewer scores when a batch holds several positives of a user. ``seen`` (CSR
    ``indptr``, ``items`` of every user's training items; needs ``user_ids``): each positive
    competes only with the items its user has not seen, as at evaluation, where the other
    training items are masked. ``extra``: [n, num_items] scores added to ``user @ items.T`` (rows
    of the same id equal, like the user vectors).
    """
    if extra is not None and extra.columns is not None:
        raise ValueError("full_softmax_loss: the extra scores cover only some items; every item's are needed")
    if user_ids is None:
        logits = user @ items.T
        return F.cross_entropy(logits if extra is None else logits + extra.rows(), pos_items)
    distinct, row = torch.unique(user_ids, return_inverse=True)
    first = torch.full((len(distinct),), len(user_ids), dtype=torch.long, device=user_ids.device)
    first.scatter_reduce_(0, row, torch.arange(len(user_ids), device=user_ids.device), reduce="amin")
    logits = user[first] @ items.T
    if extra is not None:
        logits = logits + extra.at(first)
    if seen is None:
        return -F.log_softmax(logits, dim=1)[row, pos_items].mean()
    indptr, seen_items = seen
    owner, entry = csr_rows(indptr, distinct)
    masked = logits.index_put((owner, seen_items[entry]), logits.new_tensor(float("-inf")))
    unseen_lse = torch.logsumexp(masked, dim=1)
    pos = logits[row, pos_items]
    return (torch.logaddexp(unseen_lse[row], pos) - pos).mean()


def shared_softmax_loss(pos: torch.Tensor, user: torch.Tensor, items: torch.Tensor, pos_items: torch.Tensor,
                        num_shared: int, extra: RowScores | None = None) -> torch.Tensor:
    """Cross-entropy of each positive against ``num_shared`` items drawn uniformly (torch's global
    RNG) and shared by the whole batch; a drawn item that is the row's own positive is masked.

    ``pos``: [n] the positives' scores (= ``user[r] @ items[pos_items[r]]``). Costs n x num_shared
    scores instead of n x num_items: the catalogue-size knob for large catalogues. ``extra`` with
    ``columns``: the model drew the shared items (and scored only those): they are these.
    """
    if extra is not None and extra.columns is not None:
        drawn = extra.columns.to(items.device)
    else:
        drawn = torch.randint(items.shape[0], (num_shared,), device=items.device)
    neg = user @ items[drawn].T
    if extra is not None:
        neg = neg + (extra.rows() if extra.columns is not None else extra.table[:, drawn][extra.index])
    neg = neg.masked_fill(drawn.unsqueeze(0) == pos_items.unsqueeze(1), float("-inf"))
    return sampled_softmax_loss(pos, neg)


def ranking_loss(name: str, pos: torch.Tensor, neg: torch.Tensor, user: torch.Tensor | None = None,
                 items: torch.Tensor | None = None, pos_items: torch.Tensor | None = None,
                 num_shared: int = 0, user_ids: torch.Tensor | None = None,
                 seen: tuple[torch.Tensor, torch.Tensor] | None = None,
                 extra: RowScores | None = None) -> torch.Tensor:
    """``train.loss``: "bpr", or "softmax" over every item (or ``num_shared`` shared uniform ones)
    when the model scores them all in the step (``user``/``items`` given), and over the sampled
    negatives otherwise. ``user_ids``, ``seen``, ``extra``: see :func:`full_softmax_loss`."""
    if name == "bpr":
        return bpr_loss(pos, neg)
    if name != "softmax":
        raise ValueError(f"unknown loss {name!r}; expected bpr or softmax")
    if user is not None and items is not None and pos_items is not None:
        if num_shared > 0:
            return shared_softmax_loss(pos, user.float(), items.float(), pos_items, num_shared, extra)
        return full_softmax_loss(user.float(), items.float(), pos_items, user_ids, seen, extra)
    return sampled_softmax_loss(pos, neg)
