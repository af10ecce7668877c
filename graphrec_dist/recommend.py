"""``graphrec-dist recommend --run DIR --user ID``: a user's top-k items next to their history.

Items the user already rated in training are never recommended again. ``--user`` is the
original user id of the data (``users.csv``); ``--index`` takes the internal index instead.
``--history ID,ID,...`` ranks items for someone who is not in the data, from the items they liked
(original item ids, as in ``books.csv``): their edges are added at inference and nothing is
trained (graphsage, ease, popularity, content_knn; docs/EVALUATION.md, "New users"). The text
says books, movies or items as the bundle's ``item_label`` says; JSON keys stay ``book_*``.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional

import numpy as np
import torch

from graphrec_dist.checkpoint import load_run
from graphrec_dist.config import parse_args
from graphrec_dist.distributed import DistContext
from graphrec_dist.errors import UserError

COLUMN = 56  # characters per side in the text layout


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphrec-dist recommend", description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a run directory (uses best.pt) or a checkpoint file")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="original user id (as in the ratings file)")
    who.add_argument("--index", type=int, help="internal user index (0..num_users-1)")
    who.add_argument("--history", help="a new user's liked items: comma-separated original item ids")
    parser.add_argument("--k", type=int, default=10, help="how many items to recommend (default 10)")
    parser.add_argument("--show-history", type=int, default=10,
                        help="history items to show (default 10; 0 = all)")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides of the run's config")
    return parser


def user_index(bundle, user: Optional[str], index: Optional[int]) -> int:
    """The internal index of ``--user`` (original id) or ``--index``; a clear error if unknown."""
    if index is not None:
        if not 0 <= index < bundle.num_users:
            raise UserError(f"--index {index}: expected 0..{bundle.num_users - 1}")
        return index
    ids = bundle.users["user_id"].astype(str).tolist()
    try:
        return ids.index(str(user))
    except ValueError:
        raise UserError(f"--user {user}: no such user id in {bundle.path or 'the bundle'}/users.csv "
                        f"(ids look like {', '.join(ids[:3])}, ...)") from None


def history_indices(bundle, text: str) -> list[int]:
    """Item indices of ``--history``'s original ids (first occurrence order, repeats dropped)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise UserError("--history is empty: give the liked items' ids, e.g. --history 1,2,3")
    ids = {str(v): i for i, v in enumerate(bundle.books["book_id"].tolist())}
    unknown = [p for p in parts if p not in ids]
    if unknown:
        raise UserError(f"--history: {len(unknown)} unknown item id(s) {', '.join(unknown[:5])} (not in "
                        f"{bundle.path or 'the bundle'}/books.csv, column book_id)")
    return list(dict.fromkeys(ids[p] for p in parts))


def recommend_history(model, bundle, books: list[int], k: int,
                      ctx: Optional[DistContext] = None) -> list[dict[str, Any]]:
    """Top-``k`` items for a new user who liked ``books`` (item indices), those excluded."""
    history = (np.array([0, len(books)], dtype=np.int64), np.array(sorted(books), dtype=np.int64))
    scorer = model.history_scorer(bundle, history, ctx or DistContext())
    return _top(bundle, scorer.scores(torch.tensor([0]))[0], books, k)


def _top(bundle, scores: torch.Tensor, seen, k: int) -> list[dict[str, Any]]:
    scores = scores.float().cpu().clone()
    scores[torch.as_tensor(seen, dtype=torch.int64)] = float("-inf")
    top = torch.topk(scores, min(k, bundle.num_books - len(seen)))
    return [_book(bundle, int(b), float(s)) for s, b in zip(top.values, top.indices)]


def _book(bundle, b: int, score: Optional[float] = None) -> dict[str, Any]:
    row = bundle.books.iloc[b]
    out = {"book_index": b, "book_id": _plain(row.get("book_id")), "title": str(row.get("title", "")),
           "authors": str(row.get("authors", ""))}
    if score is not None:
        out["score"] = round(score, 4)
    return out


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def recommend(model, bundle, u: int, k: int, ctx: Optional[DistContext] = None) -> list[dict[str, Any]]:
    """Top-``k`` items for user index ``u`` from the model's scorer, training books excluded."""
    indptr, indices = bundle.train_csr()
    seen = torch.from_numpy(indices[indptr[u]:indptr[u + 1]])
    return _top(bundle, model.scorer(bundle, ctx or DistContext()).scores(torch.tensor([u]))[0], seen, k)


def history(bundle, u: int, limit: int) -> list[dict[str, Any]]:
    indptr, indices = bundle.train_csr()
    return shown(bundle, indices[indptr[u]:indptr[u + 1]].tolist(), limit)


def shown(bundle, books: list[int], limit: int) -> list[dict[str, Any]]:
    return [_book(bundle, b) for b in (books[:limit] if limit > 0 else books)]


def _cell(book: dict[str, Any], prefix: str) -> str:
    text = f"{prefix}{book['title']}" + (f" - {book['authors']}" if book["authors"] else "")
    return text if len(text) <= COLUMN else text[:COLUMN - 3] + "..."


def format_text(result: dict[str, Any]) -> str:
    recs, hist = result["recommendations"], result["history"]
    new_user = result["user_index"] is None
    who = ("a new user (" if new_user else f"user {result['user_id']} (index {result['user_index']}, ") + \
        f"model {result['model']})"
    lines = [f"{who}: "
             f"top {len(recs)} of {result['num_books']} {result['item_label']}s, "
             f"{result['history_size']} {'given as history' if new_user else 'rated in training'}",
             f"{'RECOMMENDED':<{COLUMN}}  | HISTORY ({'given' if new_user else 'training'})",
             "-" * (2 * COLUMN + 4)]
    for i in range(max(len(recs), len(hist))):
        left = _cell(recs[i], f"{i + 1:>2}. ") if i < len(recs) else ""
        right = _cell(hist[i], "- ") if i < len(hist) else ""
        lines.append(f"{left:<{COLUMN}}  | {right}")
    if result["history_size"] > len(hist):
        lines.append(f"{'':<{COLUMN}}  | ... and {result['history_size'] - len(hist)} more")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Load the run, score one user against every item, print the top-k and the history."""
    args = parse_args(build_parser(), argv)
    if args.k < 1:
        raise UserError(f"--k {args.k}: expected a positive integer")
    cfg, model, bundle = load_run(args.run, list(args.overrides))
    model.eval()
    common = {"model": cfg.model.name, "item_label": bundle.item_label, "num_books": bundle.num_books}
    if args.history is not None:
        books = history_indices(bundle, args.history)
        result = {"user_id": None, "user_index": None, **common, "history_size": len(books),
                  "recommendations": recommend_history(model, bundle, books, args.k),
                  "history": shown(bundle, books, args.show_history)}
    else:
        u = user_index(bundle, args.user, args.index)
        indptr, _ = bundle.train_csr()
        result = {"user_id": _plain(bundle.users["user_id"].iloc[u]), "user_index": u, **common,
                  "history_size": int(indptr[u + 1] - indptr[u]),
                  "recommendations": recommend(model, bundle, u, args.k),
                  "history": history(bundle, u, args.show_history)}
    print(json.dumps(result, indent=2) if args.format == "json" else format_text(result))
    sys.stdout.flush()
    return result
