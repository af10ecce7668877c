"""The reference notebook's training loop, re-implemented for comparison with the trainer.

What the notebook did (issue 4, first paragraph), and what this module does on purpose:
- GraphSAGE (``to_hetero`` of two SAGEConv layers over learnable id embeddings) on the user–book
  graph only (``rates`` and its reverse), trained with BPR;
- a user-seeded ``NeighborLoader``: each epoch visits every user once, and each user gets ONE
  random training positive and one uniform random negative book (so an epoch is
  ceil(num_users / batch_size) steps: 27 at Goodbooks scale with batches of 2048 users);
- a book that the sampled subgraph does not contain is scored with its RAW id embedding (the
  fallback), the others with the GNN output;
- the notebook evaluated with the raw embedding table; we record that number too, but the curve we
  compare uses the GNN's own full-graph output, ranked by the project's full-ranking evaluator, so
  both loops are judged by the same ruler.

Only the loop is the notebook's; data, evaluator and hyper-parameters (dims, fanout, lr, batch
size) come from the same :class:`~graphrec_dist.config.Config` the trainer uses.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch_geometric.data import HeteroData
from torch_geometric.loader import NeighborLoader
from torch_geometric.nn import SAGEConv, to_hetero

from graphrec_dist.config import load_config
from graphrec_dist.data.bundle import BOOK, RATES, REV_RATES, USER
from graphrec_dist.data.prepare import prepare_bundle
from graphrec_dist.distributed import DistContext
from graphrec_dist.evaluate import evaluate_scorer
from graphrec_dist.models.base import EmbeddingScorer


class ReferenceSAGE(torch.nn.Module):
    """Id embeddings for users and books feeding a two-relation heterogeneous GraphSAGE."""

    def __init__(self, num_users: int, num_books: int, emb_dim: int, hidden_dim: int, num_layers: int):
        super().__init__()
        self.emb = torch.nn.ModuleDict({USER: torch.nn.Embedding(num_users, emb_dim),
                                        BOOK: torch.nn.Embedding(num_books, emb_dim)})
        for table in self.emb.values():
            torch.nn.init.normal_(table.weight, std=0.1)

        class _Homo(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                dims = [emb_dim] + [hidden_dim] * num_layers
                self.convs = torch.nn.ModuleList(SAGEConv(dims[i], dims[i + 1]) for i in range(num_layers))

            def forward(self, x, edge_index):
                for i, conv in enumerate(self.convs):
                    x = conv(x, edge_index)
                    if i < len(self.convs) - 1:
                        x = x.relu()
                return x

        metadata = ([USER, BOOK], [RATES, REV_RATES])
        self.gnn = to_hetero(_Homo(), metadata, aggr="sum")

    def forward(self, n_id: dict[str, torch.Tensor], edge_index_dict: dict) -> dict[str, torch.Tensor]:
        x = {t: self.emb[t](n_id[t]) for t in (USER, BOOK)}
        return self.gnn(x, edge_index_dict)


def user_book_graph(bundle) -> HeteroData:
    """The user–book part of Graph3 (training pairs and their reverse), with node ids."""
    data = HeteroData()
    data[USER].num_nodes = bundle.num_users
    data[BOOK].num_nodes = bundle.num_books
    ei = bundle.graph[RATES].edge_index
    data[RATES].edge_index = ei
    data[REV_RATES].edge_index = ei.flip(0)
    data[USER].n_id = torch.arange(bundle.num_users)
    data[BOOK].n_id = torch.arange(bundle.num_books)
    return data


@torch.no_grad()
def full_embeddings(model: ReferenceSAGE, data: HeteroData) -> dict[str, torch.Tensor]:
    """The GNN output for every user and book, full-batch over sparse adjacencies (no sampling)."""
    from torch_sparse import SparseTensor

    model.eval()
    adj = {}
    for et in (RATES, REV_RATES):
        src, dst = data[et].edge_index
        adj[et] = SparseTensor(row=dst, col=src, sparse_sizes=(data[et[2]].num_nodes, data[et[0]].num_nodes))
    out = model({USER: data[USER].n_id, BOOK: data[BOOK].n_id}, adj)
    model.train()
    return out


def _one_positive_per_user(users: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor,
                           gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A uniform random training book for each user that has one; returns (users, books)."""
    deg = indptr[users + 1] - indptr[users]
    users = users[deg > 0]
    deg = deg[deg > 0]
    offset = (torch.rand(len(users), generator=gen) * deg).long()
    return users, indices[indptr[users] + offset]


def _book_vectors(books: torch.Tensor, out_book: torch.Tensor, batch_books: torch.Tensor,
                  raw: torch.nn.Embedding, slot: torch.Tensor) -> tuple[torch.Tensor, float]:
    """GNN output for books in the subgraph, the raw id embedding (the fallback) for the rest."""
    slot[batch_books] = torch.arange(len(batch_books))
    local = slot[books]
    inside = local >= 0
    vec = raw(books)
    vec = torch.where(inside.unsqueeze(1), out_book[local.clamp(min=0)], vec)
    slot[batch_books] = -1
    return vec, float(1.0 - inside.float().mean())


def train_step(model, batch, indptr, indices, num_books: int, l2: float, optimizer, gen, slot) -> dict[str, float]:
    """One notebook step: seed users, one positive and one negative each, BPR + L2."""
    seeds = batch[USER].n_id[: batch[USER].batch_size]
    users, pos = _one_positive_per_user(seeds, indptr, indices, gen)
    keep = torch.isin(seeds, users)
    neg = torch.randint(0, num_books, (len(users),), generator=gen)
    out = model({USER: batch[USER].n_id, BOOK: batch[BOOK].n_id}, batch.edge_index_dict)
    u_vec = out[USER][: len(seeds)][keep]
    p_vec, p_out = _book_vectors(pos, out[BOOK], batch[BOOK].n_id, model.emb[BOOK], slot)
    n_vec, n_out = _book_vectors(neg, out[BOOK], batch[BOOK].n_id, model.emb[BOOK], slot)
    loss = -F.logsigmoid((u_vec * p_vec).sum(-1) - (u_vec * n_vec).sum(-1)).mean()
    reg = (model.emb[USER](users).pow(2).sum() + model.emb[BOOK](pos).pow(2).sum()
           + model.emb[BOOK](neg).pow(2).sum()) / max(len(users), 1)
    optimizer.zero_grad()
    (loss + l2 * reg).backward()
    optimizer.step()
    return {"loss": loss.item(), "fallback_pos": p_out, "fallback_neg": n_out}


def _validate(model, data, bundle, cfg, ctx) -> dict[str, float]:
    out = full_embeddings(model, data)
    gnn = evaluate_scorer(EmbeddingScorer(out[USER], out[BOOK]), bundle, "val", cfg.eval, ctx)
    raw = evaluate_scorer(EmbeddingScorer(model.emb[USER].weight.detach(), model.emb[BOOK].weight.detach()),
                          bundle, "val", cfg.eval, ctx)
    return {"val_ndcg@10": gnn.get("ndcg@10"), "val_hit@10": gnn.get("hit@10"),
            "val_ndcg@10_raw_table": raw.get("ndcg@10")}


def _setup(cfg, seed: int) -> dict[str, Any]:
    """Data, model, optimizer and the user-seeded loader of the notebook's loop."""
    torch.manual_seed(seed)
    bundle = prepare_bundle(cfg.data)
    data = user_book_graph(bundle)
    model = ReferenceSAGE(bundle.num_users, bundle.num_books, cfg.model.emb_dim, cfg.model.hidden_dim,
                          cfg.model.num_layers)
    return {
        "bundle": bundle, "data": data, "model": model, "gen": torch.Generator().manual_seed(seed),
        "csr": tuple(torch.from_numpy(a) for a in bundle.train_csr()),
        "optimizer": torch.optim.Adam(model.parameters(), lr=cfg.train.lr),
        "loader": NeighborLoader(data, num_neighbors=list(cfg.train.num_neighbors), input_nodes=(USER, None),
                                 batch_size=cfg.train.batch_size, shuffle=True),
        "slot": torch.full((bundle.num_books,), -1, dtype=torch.long),
    }


def run_reference(config_path: str | None, overrides: list[str], time_budget_s: float, max_steps: int,
                  eval_every_steps: int, seed: int = 0) -> dict[str, Any]:
    """Train with the notebook's loop until ``time_budget_s`` of training time or ``max_steps``.

    Validation (not counted in the training time) runs every ``eval_every_steps`` steps and at the
    end; returns the curve (step, epoch, train seconds, val NDCG@10 of the GNN output and of the
    raw table) and the mean share of positives/negatives that fell back to raw embeddings.
    """
    cfg, ctx = load_config(config_path, overrides), DistContext()
    if cfg.train.num_threads > 0:  # the same intra-op threads as the trainer gets from this config
        torch.set_num_threads(cfg.train.num_threads)
    r = _setup(cfg, seed)
    bundle, model = r["bundle"], r["model"]

    def point(step: int, epoch: int, train_s: float, **extra) -> dict[str, Any]:
        return {"step": step, "epoch": epoch, "train_s": round(train_s, 3), **extra,
                **_validate(model, r["data"], bundle, cfg, ctx)}

    curve, fallbacks, step, train_s, epoch = [point(0, 0, 0.0)], [], 0, 0.0, 0
    while step < max_steps and train_s < time_budget_s:
        epoch += 1
        t0 = time.perf_counter()
        for batch in r["loader"]:
            stats = train_step(model, batch, *r["csr"], bundle.num_books, cfg.train.l2, r["optimizer"], r["gen"],
                               r["slot"])
            fallbacks.append((stats["fallback_pos"], stats["fallback_neg"]))
            step += 1
            if step % eval_every_steps == 0 or step >= max_steps:
                train_s += time.perf_counter() - t0  # validation time is not training time
                curve.append(point(step, epoch, train_s, loss=stats["loss"]))
                t0 = time.perf_counter()
                if step >= max_steps or train_s >= time_budget_s:
                    break
        else:
            train_s += time.perf_counter() - t0
    if curve[-1]["step"] != step:
        curve.append(point(step, epoch, train_s))
    return {
        "loop": "reference_notebook", "num_users": bundle.num_users, "num_books": bundle.num_books,
        "steps_per_epoch": math.ceil(bundle.num_users / cfg.train.batch_size), "batch_size": cfg.train.batch_size,
        "num_neighbors": list(cfg.train.num_neighbors), "steps": step, "train_s": round(train_s, 3),
        "seed_users_per_s": round(step * cfg.train.batch_size / train_s, 1) if train_s > 0 else None,
        "fallback_share_pos": round(sum(f[0] for f in fallbacks) / max(len(fallbacks), 1), 4),
        "fallback_share_neg": round(sum(f[1] for f in fallbacks) / max(len(fallbacks), 1), 4),
        "curve": curve, "config_path": config_path, "overrides": list(overrides),
        "torch_threads": torch.get_num_threads(),
    }
