"""``graphrec-dist serve --run DIR [--host 127.0.0.1] [--port 8000]``: recommendations over HTTP.

    GET  /health                          {"status": "ok", "model": ..., "users": ..., "items": ...}
    GET  /recommend?user=ID&k=10          a user of the data (original id), training items excluded
    POST /recommend {"history": [ID, ...], "k": 10}
                                          someone not in the data, from the items they liked
                                          (models that score new users: graphsage, ease,
                                          popularity, content_knn; nothing is retrained)

Unknown ids answer 404, bad parameters 400, always as ``{"error": "..."}``; an unexpected failure
answers 500 with a generic message and is logged here, never sent to the client.

aiohttp (already installed with Ray, which the project depends on for its cluster launcher) runs
the service: an asyncio server, so requests are parsed and answered without a thread per client.
The run is loaded once, and the top-k index (``--index exact|faiss|usearch``, ``index.py``) is
built once over the item vectors computed at start-up (graphsage's whole-graph inference runs
once, and new users are folded in against it). Models without embeddings (EASE, popularity)
score every item per request.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from graphrec_dist.checkpoint import load_run
from graphrec_dist.config import parse_args
from graphrec_dist.distributed import DistContext
from graphrec_dist.errors import UserError
from graphrec_dist.index import INDEXES, scorer_index, top_k_unseen
from graphrec_dist.models.base import EmbeddingScorer

log = logging.getLogger("graphrec_dist.serve")
MAX_K = 1000


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Service:
    """A loaded run and what answering needs."""

    cfg: Any
    model: Any
    bundle: Any
    scorer: Any
    user_index: dict[str, int]
    item_index: dict[str, int]
    index: Any = None  # top-k index over the item vectors; None for models without embeddings
    item_ids: tuple = ()  # original ids and titles by item index, looked up per answer
    item_titles: Optional[tuple] = None

    @classmethod
    def load(cls, run: str, overrides: list[str] = (), index: str = "exact",
             index_params: Optional[dict[str, Any]] = None) -> Service:
        cfg, model, bundle = load_run(run, list(overrides))
        model.eval()
        bundle.train_csr()  # built once here, not by the first request
        scorer = model.scorer(bundle, DistContext())
        if hasattr(model, "freeze_inference"):
            model.freeze_inference(bundle)  # new users are folded in against the start-up inference
        users = {str(v): i for i, v in enumerate(bundle.users["user_id"].tolist())}
        item_ids = tuple(bundle.books["book_id"].tolist())
        items = {str(v): i for i, v in enumerate(item_ids)}
        titles = tuple(bundle.books["title"].tolist()) if "title" in bundle.books.columns else None
        # Models without item embeddings (EASE, popularity) score every item per request.
        search = None
        if isinstance(scorer, EmbeddingScorer) or index != "exact":
            search = scorer_index(scorer, index, index_params or {})
        return cls(cfg, model, bundle, scorer, users, items, search, item_ids, titles)

    def parse_k(self, value: Any) -> int:
        try:
            k = int(value)
        except (TypeError, ValueError):
            raise HTTPError(400, f"k must be an integer, got {value!r}") from None
        if not 1 <= k <= MAX_K:
            raise HTTPError(400, f"k must be in 1..{MAX_K}, got {k}")
        return k

    def for_user(self, user: Optional[str], k: Any) -> dict[str, Any]:
        if user is None:
            raise HTTPError(400, "missing query parameter 'user'")
        k = self.parse_k(k)
        if user not in self.user_index:
            raise HTTPError(404, f"unknown user id {user!r}")
        u = self.user_index[user]
        indptr, indices = self.bundle.train_csr()
        return {"user": user, "k": k, "items": self._top(self.scorer, u, indices[indptr[u]:indptr[u + 1]], k)}

    def for_history(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("history"), list):
            raise HTTPError(400, 'expected a JSON object {"history": [item ids], "k": 10}')
        k = self.parse_k(body.get("k", 10))
        ids = [str(v) for v in body["history"]]
        if not ids:
            raise HTTPError(400, "history is empty")
        unknown = [v for v in ids if v not in self.item_index]
        if unknown:
            raise HTTPError(404, f"unknown item id(s) {', '.join(unknown[:5])}")
        books = sorted(set(self.item_index[v] for v in ids))
        history = (np.array([0, len(books)], dtype=np.int64), np.array(books, dtype=np.int64))
        try:
            scorer = self.model.history_scorer(self.bundle, history, DistContext())
        except UserError as exc:  # a model that cannot score new users
            raise HTTPError(400, str(exc)) from None
        return {"history": ids, "k": k, "items": self._top(scorer, 0, np.array(books), k)}

    def _top(self, scorer, row: int, seen: np.ndarray, k: int) -> list[dict[str, Any]]:
        """The best ``k`` unseen items for the scorer's user ``row``, from the index when there is one."""
        with torch.no_grad():
            if self.index is not None and isinstance(scorer, EmbeddingScorer):
                query = scorer.user_emb[row:row + 1].float().cpu().numpy()
                items, scores = (a[0] for a in top_k_unseen(self.index, query, [seen], k))
            else:
                scores = scorer.scores(torch.tensor([row]))[0].float().cpu().clone()
                scores[torch.as_tensor(seen, dtype=torch.int64)] = float("-inf")
                top = torch.topk(scores, min(k, len(scores) - len(seen)))
                items, scores = top.indices.numpy(), top.values.numpy()
        ids, titles = self.item_ids, self.item_titles
        return [{"item_id": ids[b], **({"title": titles[b]} if titles else {}), "score": round(float(s), 5)}
                for s, b in zip(scores.tolist(), items.tolist()) if b >= 0]

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.cfg.model.name, "users": self.bundle.num_users,
                "items": self.bundle.num_books, "item_label": self.bundle.item_label,
                "index": self.index.name if self.index is not None else "exact"}


def make_app(service: Service):
    from aiohttp import web

    def reply(status: int, payload: dict[str, Any]):
        return web.json_response(payload, status=status)

    @web.middleware
    async def errors(request, handler):
        try:
            return await handler(request)
        except HTTPError as exc:
            return reply(exc.status, {"error": str(exc)})
        except web.HTTPException as exc:  # aiohttp's own 404/405 for unknown routes
            return reply(exc.status, {"error": exc.reason})
        except Exception:  # never a stack trace to the client
            log.exception("request %s %s failed", request.method, request.path_qs)
            return reply(500, {"error": "internal error"})

    async def health(request):
        return reply(200, service.health())

    async def get_recommend(request):
        return reply(200, service.for_user(request.query.get("user"), request.query.get("k", "10")))

    async def post_recommend(request):
        try:
            body = json.loads(await request.text())
        except ValueError:
            raise HTTPError(400, "the body is not valid JSON") from None
        return reply(200, service.for_history(body))

    app = web.Application(middlewares=[errors])
    app.add_routes([web.get("/health", health), web.get("/recommend", get_recommend),
                    web.post("/recommend", post_recommend)])
    return app


async def start(service: Service, host: str, port: int):
    """Start serving; returns (runner, the bound port) so callers (tests) can use port 0."""
    from aiohttp import web

    runner = web.AppRunner(make_app(service), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, bound


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphrec-dist serve", description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a run directory (uses best.pt) or a checkpoint file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 = any free port (printed)")
    parser.add_argument("--index", choices=list(INDEXES), default="exact",
                        help="top-k search over the item vectors: exact (default), faiss (IVF) or usearch (HNSW)")
    parser.add_argument("--nprobe", type=int, default=64, help="faiss: k-means cells scanned per request")
    parser.add_argument("--expansion", type=int, default=512, help="usearch: candidates kept while searching")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides of the run's config")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(build_parser(), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # One request is one small matrix-vector product: more threads than one only contend with the
    # event loop and the other clients' requests on the same cores.
    torch.set_num_threads(1)
    params = {"faiss": {"nprobe": args.nprobe, "threads": 1},
              "usearch": {"expansion": args.expansion, "threads": 1}}.get(args.index, {})
    service = Service.load(args.run, list(args.overrides), args.index, params)

    async def run() -> None:
        runner, port = await start(service, args.host, args.port)
        print(f"serving {service.cfg.model.name} from {args.run} on http://{args.host}:{port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    from graphrec_dist.cli import run_command

    sys.exit(run_command("serve", sys.argv[1:]))
