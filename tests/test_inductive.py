"""The inductive protocols (docs/EVALUATION.md): the cold-item and new-user splits, content_knn,
graphsage's unknown vector, and scoring a user from a given history without retraining."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_sampling import toy_bundle

from graphrec_dist.checkpoint import save_checkpoint
from graphrec_dist.cli import main as cli_main
from graphrec_dist.config import SplitConfig, load_config
from graphrec_dist.data import interactions as inter
from graphrec_dist.data.store import load_bundle, save_bundle
from graphrec_dist.distributed import DistContext
from graphrec_dist.errors import ConfigError
from graphrec_dist.models import build_model
from graphrec_dist.models.content_knn import content_similarity
from graphrec_dist.recommend import main as recommend_main
from graphrec_dist.run_dir import BEST

CTX = DistContext()


def _random_pairs(num_users: int = 60, num_books: int = 40, per_user: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(num_users), per_user)
    books = np.concatenate([rng.choice(num_books, per_user, replace=False) for _ in range(num_users)])
    return users, books


def test_cold_split_partitions_the_rows_and_keeps_cold_items_out_of_everything_warm() -> None:
    users, books = _random_pairs()
    cs = inter.cold_split(users, books, 60, 40, cold_items=0.25, cold_users=0.2, seed=3)
    assert len(cs.cold_items) == 10 and len(np.unique(users[cs.user_test])) == 12
    parts = [cs.cold_val, cs.cold_test, cs.user_history, cs.user_val, cs.user_test, cs.warm]
    every = np.concatenate(parts)
    assert len(every) == len(np.unique(every))  # disjoint
    dropped = np.setdiff1d(np.arange(len(users)), every)  # only a cold user's rows on cold items
    assert np.isin(books[dropped], cs.cold_items).all()
    cold_users = np.unique(users[cs.user_test])
    assert np.isin(users[dropped], cold_users).all()
    assert not np.isin(books[cs.warm], cs.cold_items).any()  # leakage: no cold item left to train on
    assert not np.isin(users[cs.warm], cold_users).any()
    assert np.isin(books[np.concatenate([cs.cold_val, cs.cold_test])], cs.cold_items).all()
    # One test and one validation row per cold user; the rest is their history.
    for rows in (cs.user_test, cs.user_val):
        assert np.array_equal(np.sort(users[rows]), cold_users)


def test_cold_split_is_deterministic_per_seed_and_protocols_draw_independently() -> None:
    users, books = _random_pairs()
    a = inter.cold_split(users, books, 60, 40, 0.25, 0.2, seed=3)
    b = inter.cold_split(users, books, 60, 40, 0.25, 0.2, seed=3)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    c = inter.cold_split(users, books, 60, 40, 0.25, 0.2, seed=4)
    assert not np.array_equal(a.cold_items, c.cold_items)
    items_only = inter.cold_split(users, books, 60, 40, 0.25, 0.0, seed=3)
    assert np.array_equal(items_only.cold_items, a.cold_items)
    off = inter.cold_split(users, books, 60, 40, 0.0, 0.0, seed=3)
    assert np.array_equal(off.warm, np.arange(len(users))) and len(off.cold_items) == 0


def test_halves_send_a_single_row_either_way() -> None:
    owners = np.arange(400)  # one row each
    to_test = inter._halves(owners, np.random.default_rng(0))
    assert 150 < to_test.sum() < 250
    owners = np.repeat(np.arange(100), 4)  # four rows each: always two and two
    assert (np.bincount(owners[inter._halves(owners, np.random.default_rng(0))]) == 2).all()


@pytest.fixture(scope="module")
def cold_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("cold")
    cfg = load_config(None, [f"data.raw_dir={root}/raw", f"data.bundle_dir={root}/bundle", "data.synth_users=150",
                             "data.split.cold_items=0.2", "data.split.cold_users=0.1"])
    from graphrec_dist.data.prepare import prepare_bundle

    return prepare_bundle(cfg.data), cfg


def test_built_bundle_holds_the_inductive_splits_without_leakage(cold_bundle) -> None:
    bundle, cfg = cold_bundle
    cold = bundle.cold_items.numpy()
    assert len(cold) == round(0.2 * bundle.num_books)
    rates = bundle.graph["user", "rates", "book"].edge_index.numpy()
    assert not np.isin(rates[1], cold).any() and not np.isin(bundle.train[:, 1].numpy(), cold).any()
    for split in ("val", "test", "cold_user_history", "cold_user_val", "cold_user_test"):
        assert not np.isin(bundle.split(split)[:, 1].numpy(), cold).any(), split
    new_users = bundle.split("cold_user_test")[:, 0].numpy()
    assert len(new_users) == round(0.1 * bundle.num_users)
    assert not np.isin(rates[0], new_users).any()
    reloaded = load_bundle(bundle.path)
    assert torch.equal(reloaded.cold_items, bundle.cold_items)
    assert torch.equal(reloaded.split("cold_test"), bundle.split("cold_test"))


@pytest.mark.parametrize("value", ["-0.1", "0.6"])
def test_cold_fraction_outside_the_range_exits_2(value: str, capsys) -> None:
    assert cli_main(["train", "configs/debug.yaml", f"data.split.cold_items={value}"]) == 2
    assert "data.split.cold_items" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="data.split.cold_users"):
        SplitConfig(cold_users=float(value))


def test_content_knn_similarity_by_hand() -> None:
    # toy_bundle: book b has tag b % 4, so books sharing a tag have cosine 1, others 0.
    bundle = toy_bundle()
    sim = content_similarity(bundle)
    assert sim[0, 4] == pytest.approx(1.0) and sim[0, 1] == 0.0 and sim[0, 0] == 0.0
    model = build_model(load_config(None, ["model.name=content_knn"]), bundle)
    model.fit(bundle, CTX)
    history = (np.array([0, 1]), np.array([0]))
    scores = model.history_scorer(bundle, history, CTX).scores(torch.tensor([0]))[0]
    assert torch.equal(scores > 0, (torch.arange(15) % 4 == 0) & (torch.arange(15) != 0))


def _graphsage(bundle, *overrides: str):
    cfg = load_config(None, ["model.emb_dim=8", "model.hidden_dim=8", "model.num_layers=2", *overrides])
    torch.manual_seed(0)
    return build_model(cfg, bundle).eval(), cfg


def test_graphsage_history_scores_equal_the_users_own_without_id_embeddings() -> None:
    bundle = toy_bundle()
    model, cfg = _graphsage(bundle, "model.user_id_embedding=false")
    own = model.scorer(bundle, CTX).scores(torch.arange(bundle.num_users))
    history = bundle.train_csr()
    folded = model.history_scorer(bundle, history, CTX).scores(torch.arange(bundle.num_users))
    assert torch.allclose(folded, own, atol=1e-5)
    # With per-user id embeddings a new user starts from the unknown vector instead: not the same.
    model, cfg = _graphsage(bundle, "model.id_dropout=0.2")
    own = model.scorer(bundle, CTX).scores(torch.arange(bundle.num_users))
    folded = model.history_scorer(bundle, history, CTX).scores(torch.arange(bundle.num_users))
    assert not torch.allclose(folded, own, atol=1e-3)


def test_graphsage_books_without_interactions_get_the_unknown_vector() -> None:
    # Books 13 and 14 lose their ratings; both have tag 13 % 4 = 1 ... and 14 % 4 = 2, so give book
    # 14 the same tag as 13: identical side relations and no ratings -> identical outputs.
    bundle = toy_bundle()
    keep = bundle.train[:, 1] < 13
    bundle.train = bundle.train[keep]
    g = bundle.graph
    for et in (("user", "rates", "book"), ("book", "rev_rates", "user")):
        g[et].edge_index = bundle.train.T.contiguous() if et[1] == "rates" else bundle.train.T.flip(0).contiguous()
        g[et].edge_weight = torch.ones(len(bundle.train))
    for et, row in ((("book", "has_tag", "tag"), 1), (("tag", "rev_has_tag", "book"), 0)):
        g[et].edge_index[row, 14] = 1
        g[et].edge_weight[14] = g[et].edge_weight[13]
    model, cfg = _graphsage(bundle, "model.id_dropout=0.2")
    books = model.embed_all(bundle, CTX)["book"]
    assert torch.allclose(books[13], books[14]) and not torch.allclose(books[12], books[13])
    plain, _ = _graphsage(bundle)  # without id_dropout each keeps its own (untrained) id embedding
    books = plain.embed_all(bundle, CTX)["book"]
    assert not torch.allclose(books[13], books[14])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hist")
    bundle = toy_bundle()
    bundle.books["book_id"] = np.arange(bundle.num_books) + 500
    path = save_bundle(bundle, root / "bundle")
    cfg = load_config(None, [f"data.bundle_dir={path}", "model.emb_dim=8", "model.hidden_dim=8",
                             "model.user_id_embedding=false"])
    torch.manual_seed(0)
    model = build_model(cfg, bundle)
    save_checkpoint(root / "run" / BEST, {"model": model.state_dict(), "config": cfg.to_dict()})
    return root / "run"


def test_recommend_history_agrees_with_the_users_own_recommendations(run_dir: Path, capsys) -> None:
    bundle = toy_bundle()
    indptr, items = bundle.train_csr()
    own = recommend_main(["--run", str(run_dir), "--index", "2", "--k", "5", "--format", "json"])
    ids = ",".join(str(500 + b) for b in items[indptr[2]:indptr[3]])
    new = recommend_main(["--run", str(run_dir), "--history", ids, "--k", "5", "--format", "json"])
    assert new["user_index"] is None and new["history_size"] == 5
    assert [r["book_index"] for r in new["recommendations"]] == [r["book_index"] for r in own["recommendations"]]
    assert [r["score"] for r in new["recommendations"]] == pytest.approx([r["score"] for r in own["recommendations"]],
                                                                         abs=1e-4)
    recommend_main(["--run", str(run_dir), "--history", ids, "--k", "3"])
    assert "a new user (model graphsage)" in capsys.readouterr().out


@pytest.mark.parametrize("history, message", [("500,77,501", "unknown item id(s) 77"),
                                              (" , ", "--history is empty")])
def test_recommend_history_bad_input_exits_2(run_dir: Path, capsys, history: str, message: str) -> None:
    assert cli_main(["recommend", "--run", str(run_dir), "--history", history]) == 2
    assert message in capsys.readouterr().err


def test_models_that_need_retraining_refuse_new_users_clearly() -> None:
    bundle = toy_bundle()
    model = build_model(load_config(None, ["model.name=mf", "model.emb_dim=4"]), bundle)
    with pytest.raises(ConfigError, match="without retraining"):
        model.history_scorer(bundle, bundle.train_csr(), CTX)
