"""export (embeddings + every user's top-k as Parquet) and serve (HTTP JSON), on a toy run."""
from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from test_sampling import toy_bundle

from graphrec_dist import checkpoint as ckpt
from graphrec_dist.cli import main as cli_main
from graphrec_dist.config import load_config
from graphrec_dist.data.store import save_bundle
from graphrec_dist.export import export
from graphrec_dist.models import build_model
from graphrec_dist.recommend import main as recommend_main


def _run(root: Path, *overrides: str) -> Path:
    bundle = toy_bundle()
    bundle.books["book_id"] = np.arange(bundle.num_books) + 500
    bundle.books["title"] = [f"Title {i}" for i in range(bundle.num_books)]
    bundle.users["user_id"] = np.arange(bundle.num_users) + 100
    path = save_bundle(bundle, root / "bundle")
    cfg = load_config(None, [f"data.bundle_dir={path}", "model.emb_dim=8", "model.hidden_dim=8", *overrides])
    torch.manual_seed(0)
    model = build_model(cfg, bundle)
    if model.kind == "closed_form":
        model.fit(bundle, None)
    ckpt.save_checkpoint(root / "run" / ckpt.BEST, {"model": model.state_dict(), "config": cfg.to_dict()})
    return root / "run"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("export"), "model.user_id_embedding=false")


def test_export_top_k_equals_recommend_and_excludes_training_items(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    manifest = export(str(run_dir), str(out), k=4, overrides=[])
    assert manifest["topk_rows"] == 20 * 4 and manifest["embeddings"]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    table = pq.read_table(out / "topk" / "part-00000.parquet").to_pandas()
    assert len(table) == 80 and set(table["rank"]) == {0, 1, 2, 3}
    bundle = toy_bundle()
    indptr, items = bundle.train_csr()
    for u in (0, 7, 19):
        rows = table[table["user_index"] == u].sort_values("rank")
        assert not set(rows["item_index"]) & set(items[indptr[u]:indptr[u + 1]].tolist())
        rec = recommend_main(["--run", str(run_dir), "--index", str(u), "--k", "4", "--format", "json"])
        assert rows["item_index"].tolist() == [r["book_index"] for r in rec["recommendations"]]
        assert rows["item_id"].tolist() == [r["book_id"] for r in rec["recommendations"]]
        assert (rows["user_id"] == 100 + u).all()
    user_emb, item_emb = np.load(out / "user_emb.npy"), np.load(out / "item_emb.npy")
    assert user_emb.shape[0] == 20 and item_emb.shape[0] == 15
    scores = user_emb[7] @ item_emb.T
    best = table[(table["user_index"] == 7) & (table["rank"] == 0)]
    assert float(best["score"].iloc[0]) == pytest.approx(float(scores[int(best["item_index"].iloc[0])]), abs=1e-4)


def test_export_of_a_model_without_embeddings_writes_the_top_k_only(tmp_path: Path) -> None:
    run = _run(tmp_path, "model.name=popularity")
    manifest = export(str(run), str(tmp_path / "out"), k=3, overrides=[])
    assert not manifest["embeddings"] and not (tmp_path / "out" / "user_emb.npy").exists()
    assert manifest["topk_rows"] == 60


def test_a_failed_export_leaves_the_previous_one_untouched(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    export(str(run_dir), str(out), k=2, overrides=[])
    before = (out / "manifest.json").read_text()
    assert cli_main(["export", "--run", str(run_dir), "--out", str(out), "--k", "0"]) == 2
    assert "--k 0" in capsys.readouterr().err
    assert cli_main(["export", "--run", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert (out / "manifest.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("kind", ["faiss", "usearch"])
def test_export_through_an_approximate_index_matches_exact_on_a_small_catalogue(run_dir: Path, tmp_path: Path,
                                                                                kind: str) -> None:
    pytest.importorskip(kind)
    exact = export(str(run_dir), str(tmp_path / "exact"), k=4, overrides=[])
    approx = export(str(run_dir), str(tmp_path / kind), k=4, overrides=[], index=kind)
    assert approx["index"] == {"kind": kind} and exact["index"] == {"kind": "exact"}
    read = lambda out: pq.read_table(out / "topk" / "part-00000.parquet").to_pandas()  # noqa: E731
    a, b = read(tmp_path / "exact"), read(tmp_path / kind)
    # 15 items: faiss has one cell and usearch's walk sees every node, so both are exact here
    assert a[["user_index", "rank", "item_index"]].equals(b[["user_index", "rank", "item_index"]])
    np.testing.assert_allclose(a["score"], b["score"], atol=1e-5)


def test_an_approximate_index_needs_a_model_with_embeddings(tmp_path: Path, capsys) -> None:
    pytest.importorskip("faiss")
    run = _run(tmp_path, "model.name=popularity")
    assert cli_main(["export", "--run", str(run), "--out", str(tmp_path / "out"), "--index", "faiss"]) == 2
    assert "no item embeddings to index" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


class _Server:
    """The service on a free loopback port, in a thread with its own event loop."""

    def __init__(self, run: Path, index: str = "exact"):
        from graphrec_dist.serve import Service, start

        self.service = Service.load(str(run), index=index)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner, self.port = asyncio.run_coroutine_threadsafe(
            start(self.service, "127.0.0.1", 0), self.loop).result(timeout=30)

    def call(self, path: str, body: bytes | None = None) -> tuple[int, dict]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(run_dir: Path):
    srv = _Server(run_dir)
    yield srv
    srv.stop()


def test_serve_answers_users_and_new_histories_like_recommend(server, run_dir: Path) -> None:
    status, health = server.call("/health")
    assert status == 200 and health["status"] == "ok" and health["users"] == 20 and health["items"] == 15
    status, got = server.call("/recommend?user=103&k=4")
    rec = recommend_main(["--run", str(run_dir), "--user", "103", "--k", "4", "--format", "json"])
    assert status == 200 and [i["item_id"] for i in got["items"]] == [r["book_id"] for r in rec["recommendations"]]
    history = [500, 501, 507]
    status, got = server.call("/recommend", json.dumps({"history": history, "k": 5}).encode())
    rec = recommend_main(["--run", str(run_dir), "--history", "500,501,507", "--k", "5", "--format", "json"])
    assert status == 200 and [i["item_id"] for i in got["items"]] == [r["book_id"] for r in rec["recommendations"]]
    assert not set(history) & {i["item_id"] for i in got["items"]}


def test_serve_answers_from_an_approximate_index(run_dir: Path) -> None:
    pytest.importorskip("usearch")
    srv = _Server(run_dir, index="usearch")
    try:
        status, health = srv.call("/health")
        assert status == 200 and health["index"] == "usearch"
        status, got = srv.call("/recommend?user=103&k=4")
        rec = recommend_main(["--run", str(run_dir), "--user", "103", "--k", "4", "--format", "json"])
        assert status == 200 and [i["item_id"] for i in got["items"]] == [r["book_id"] for r in rec["recommendations"]]
    finally:
        srv.stop()


@pytest.mark.parametrize("path, body, status, message", [
    ("/recommend?user=7", None, 404, "unknown user id '7'"),
    ("/recommend?user=100&k=0", None, 400, "k must be in 1..1000"),
    ("/recommend?user=100&k=x", None, 400, "k must be an integer"),
    ("/recommend", None, 400, "missing query parameter 'user'"),
    ("/recommend", b'{"history": [500, 9]}', 404, "unknown item id(s) 9"),
    ("/recommend", b'{"history": []}', 400, "history is empty"),
    ("/recommend", b"{not json", 400, "not valid JSON"),
    ("/recommend", b'[1, 2]', 400, "expected a JSON object"),
    ("/nowhere", None, 404, "Not Found"),
])
def test_serve_errors_are_json_with_the_right_status(server, path, body, status, message) -> None:
    got_status, got = server.call(path, body)
    assert got_status == status and message in got["error"] and set(got) == {"error"}
