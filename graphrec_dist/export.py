"""``graphrec-dist export --run DIR --out OUT [--k 100]``: a trained run's output where a product reads it.

OUT holds, written to a temporary folder that replaces OUT only when every part is complete:

    manifest.json          what is here: model, run, k, counts, files, the command
    users.csv, items.csv   index -> original id (and title for items)
    user_emb.npy           float32 [num_users, d] scoring vectors (models with embeddings only:
    item_emb.npy           graphsage, mf, lightgcn); score = user_emb @ item_emb.T
    topk/part-00000.parquet  every user's top-k items, training items excluded: columns user_index,
                           user_id, rank (0 = best), item_index, item_id, score; one part per
                           worker, written in row groups of ``eval.user_chunk`` users

Under torchrun each rank scores its own contiguous block of users and writes its own part; rank 0
writes the rest and renames the folder into place after a barrier. The top-k of a user is the
same list as ``graphrec-dist recommend --user`` gives (the same scorer, the same masking).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from graphrec_dist.checkpoint import load_run
from graphrec_dist.config import parse_args
from graphrec_dist.distributed import DistContext, all_gather_object, barrier, cleanup, init_distributed, shard
from graphrec_dist.errors import UserError
from graphrec_dist.index import INDEXES, scorer_index, top_k_unseen
from graphrec_dist.models.base import EmbeddingScorer
from graphrec_dist.models.sparse import csr_rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphrec-dist export", description=__doc__.split("\n")[0])
    parser.add_argument("--run", "--run-dir", dest="run", required=True, help="run directory or checkpoint file")
    parser.add_argument("--out", required=True, help="output folder (replaced whole when the export completes)")
    parser.add_argument("--k", type=int, default=100, help="items per user (default 100)")
    parser.add_argument("--index", choices=list(INDEXES), default="exact",
                        help="top-k search: exact (a matrix multiply per chunk of users; default), faiss (IVF) "
                             "or usearch (HNSW): approximate, models with embeddings only (docs/SERVING.md)")
    parser.add_argument("--nprobe", type=int, default=64, help="faiss: k-means cells scanned per user")
    parser.add_argument("--expansion", type=int, default=512, help="usearch: candidates kept while searching")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides of the run's config")
    return parser


def topk_rows(scorer, bundle, users: np.ndarray, k: int, index=None) -> dict[str, np.ndarray]:
    """Long-format top-k of ``users`` (training items masked), as columns.

    Without ``index`` every item is scored (any model); with one (``index.py``) the users'
    embedding rows are its queries.
    """
    indptr, indices = bundle.train_csr()
    k = min(k, bundle.num_books)
    if index is None:
        with torch.no_grad():
            scores = scorer.scores(torch.as_tensor(users)).float().cpu().clone()
        rows, entry = csr_rows(indptr, users)
        scores[torch.as_tensor(rows), torch.as_tensor(indices[entry], dtype=torch.int64)] = float("-inf")
        top = torch.topk(scores, k, dim=1)
        items, vals = top.indices.numpy(), top.values.numpy()
    else:
        queries = scorer.user_emb[torch.as_tensor(users)].float().cpu().numpy()
        items, vals = top_k_unseen(index, queries, [indices[indptr[u]:indptr[u + 1]] for u in users], k)
    keep = np.isfinite(vals)  # a user who rated (almost) everything has fewer than k items left
    user_rep = np.repeat(users, k).reshape(len(users), k)
    rank = np.tile(np.arange(k), (len(users), 1))
    book_ids = bundle.books["book_id"].to_numpy()
    user_ids = bundle.users["user_id"].to_numpy()
    return {"user_index": user_rep[keep], "user_id": user_ids[user_rep[keep]], "rank": rank[keep],
            "item_index": items[keep], "item_id": book_ids[items[keep]], "score": vals[keep].astype(np.float32)}


def write_part(path: Path, scorer, bundle, lo: int, hi: int, k: int, chunk: int, index=None) -> int:
    """Users ``lo..hi`` into one Parquet file, a row group per chunk; returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("user_index", pa.int64()), ("user_id", pa.int64()), ("rank", pa.int32()),
                        ("item_index", pa.int64()), ("item_id", pa.int64()), ("score", pa.float32())])
    rows = 0
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(lo, hi, chunk):
            cols = topk_rows(scorer, bundle, np.arange(start, min(start + chunk, hi), dtype=np.int64), k, index)
            writer.write_table(pa.table({name: cols[name] for name in schema.names}, schema=schema))
            rows += len(cols["rank"])
    return rows


def export(run: str, out: str, k: int, overrides: list[str], ctx: Optional[DistContext] = None,
           index: str = "exact", index_params: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Write the export folder (see the module docstring); every rank calls it. Returns the manifest.

    ``index`` picks the top-k search (``index.py``); ``index_params`` go to its constructor.
    """
    if k < 1:
        raise UserError(f"--k {k}: expected a positive integer")
    ctx = ctx or DistContext()
    cfg, model, bundle = load_run(run, overrides)
    target = Path(out)
    tmp = target.with_name(f".{target.name}.export-tmp")
    if ctx.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "topk").mkdir(parents=True)
    barrier(ctx)
    try:
        model.eval()
        scorer = model.scorer(bundle, ctx)
        search = None if index == "exact" else scorer_index(scorer, index, index_params or {})
        block = shard(bundle.num_users, ctx.rank, ctx.world_size)
        lo, hi = block.start, block.stop
        rows = write_part(tmp / "topk" / f"part-{ctx.rank:05d}.parquet", scorer, bundle, lo, hi, k,
                          cfg.eval.user_chunk, search)
        counts = all_gather_object(rows, ctx)
        manifest = None
        if ctx.is_main:
            index_info = {"kind": index, **(index_params or {})}
            manifest = _write_rest(tmp, scorer, bundle, cfg, run, k, counts, ctx, index_info)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        barrier(ctx)
        return manifest or {}
    finally:
        if ctx.is_main and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _write_rest(tmp: Path, scorer, bundle, cfg, run: str, k: int, counts, ctx: DistContext,
                index: dict[str, Any]) -> dict[str, Any]:
    """Rank 0: id maps, embeddings (when the model has them) and the manifest."""
    bundle.users[["user_id"]].rename_axis("user_index").to_csv(tmp / "users.csv")
    items = bundle.books[[c for c in ("book_id", "title") if c in bundle.books.columns]]
    items.rename(columns={"book_id": "item_id"}).rename_axis("item_index").to_csv(tmp / "items.csv")
    files = ["users.csv", "items.csv"] + [f"topk/part-{r:05d}.parquet" for r in range(ctx.world_size)]
    if isinstance(scorer, EmbeddingScorer):
        np.save(tmp / "user_emb.npy", scorer.user_emb.float().cpu().numpy())
        np.save(tmp / "item_emb.npy", scorer.item_emb.float().cpu().numpy())
        files += ["user_emb.npy", "item_emb.npy"]
    manifest = {"model": cfg.model.name, "run": str(run), "k": k, "index": index, "num_users": bundle.num_users,
                "num_items": bundle.num_books, "item_label": bundle.item_label, "topk_rows": int(sum(counts)),
                "parts": ctx.world_size, "files": files, "embeddings": isinstance(scorer, EmbeddingScorer)}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(build_parser(), argv)
    ctx = init_distributed("auto", "cpu")
    try:
        params = {"faiss": {"nprobe": args.nprobe}, "usearch": {"expansion": args.expansion}}.get(args.index, {})
        manifest = export(args.run, args.out, args.k, list(args.overrides), ctx, args.index, params)
        if ctx.is_main:
            print(json.dumps({"out": args.out, **manifest}, indent=2))
            sys.stdout.flush()
        return manifest
    finally:
        cleanup(ctx)


if __name__ == "__main__":
    from graphrec_dist.cli import run_command

    sys.exit(run_command("export", sys.argv[1:]))
