"""Graph3 from hand-made CSVs (tests/fixtures/data/tiny) whose every count was worked out by hand.

The recipe with small thresholds (min_user_interactions=3, min_book_interactions=2,
tag_min_books=2, tag_top_per_book=2, sim_top_k=1):

* positives, in order: ratings >= 4 (11 rows), then to_read (5 rows, (1,1) is a duplicate): 16 pairs.
* k-core: book 5 has one reader -> gone; then user 4 has 2 -> gone. Kept users 1,2,3,5 -> 0..3,
  books 1..4 -> 0..3; 13 pairs. Per user (book indices, file order): u0 [0,1,2], u1 [0,1,2],
  u2 [3,1,2], u3 [0,1,2,3].
* random split, default_rng(42): perms [2,1,0], [0,2,1], [1,2,0], [0,3,2,1].
* tags: 10 (b1,b2), 11 (b1,b3,b4), 12 (b1,b2; -3 -> 0), 13 (b2,b3), 16 (b1,b2) pass the 2-book
  filter; 14 (one book) and 15 (unkept book) do not; top 2 per book: b1 {10,12}, b2 {10,13},
  b3 {11,13}, b4 {11}: 7 edges, tags 10..13 (16 is cut everywhere).
* authors: Ann Lee, Bob Ray, Cy Dee, Dee Cy (all authors of a book, stripped); 6 edges. Languages en-US, eng, unk; years
  1949, 1950 -> <=1950, 2005 -> 1991-2005, -300 -> unknown.
* TF-IDF (every kept feature has df=2, so each vector is uniform over its features): b1 has 11
  features, b2 8, b3 8, b4 5; cos(b1,b2)=8/sqrt(88), cos(b3,b4)=5/sqrt(40), cos(b1,b3)=3/sqrt(88).
  With top 1 neighbour, {b1,b2} and {b3,b4} remain: 4 directed edges.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from graphrec_dist.config import DataConfig, SplitConfig
from graphrec_dist.data.bundle import BOOK, RATES, REV_RATES, SIMILAR, USER
from graphrec_dist.data.prepare import build_bundle
from graphrec_dist.data.store import load_bundle, load_vocab

TINY = Path(__file__).parent / "fixtures" / "data" / "tiny"


def tiny_config(mode: str = "random", **kw) -> DataConfig:
    return DataConfig(source="goodbooks", raw_dir=str(TINY), min_user_interactions=3,
                      min_book_interactions=2, tag_min_books=2, tag_top_per_book=2, sim_top_k=1,
                      split=SplitConfig(mode=mode), **kw)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "bundle"
    path, built = build_bundle(tiny_config(), out=out)
    assert built
    return load_bundle(path)


def test_counts(tiny) -> None:
    counts = tiny.meta["counts"]
    assert counts["num_nodes"] == {"user": 4, "book": 4, "tag": 4, "author": 4, "language": 3, "year_bin": 7}
    assert counts["splits"] == {"train": 5, "val": 4, "test": 4}
    edges = counts["num_edges"]
    assert edges == {
        "user__rates__book": 5, "book__rev_rates__user": 5,
        "book__has_tag__tag": 7, "tag__rev_has_tag__book": 7,
        "book__written_by__author": 6, "author__rev_written_by__book": 6,
        "book__in_language__language": 4, "language__rev_in_language__book": 4,
        "book__published_in__year_bin": 4, "year_bin__rev_published_in__book": 4,
        "book__similar_to__book": 4,
    }


def test_id_maps(tiny) -> None:
    assert tiny.users["user_id"].tolist() == [1, 2, 3, 5]
    assert tiny.books["book_id"].tolist() == [1, 2, 3, 4]
    assert tiny.books["title"].tolist()[0] == "The Red Fox"
    assert tiny.books["authors"].tolist()[1] == "Ann Lee"


def test_random_split_by_hand(tiny) -> None:
    assert tiny.test.tolist() == [[0, 2], [1, 0], [2, 1], [3, 0]]
    assert tiny.val.tolist() == [[0, 1], [1, 2], [2, 2], [3, 3]]
    assert tiny.train.tolist() == [[0, 0], [1, 1], [2, 3], [3, 1], [3, 2]]


def test_last_split_by_hand(tmp_path) -> None:
    path, _ = build_bundle(tiny_config("last"), out=tmp_path / "b")
    b = load_bundle(path)
    assert b.test.tolist() == [[0, 2], [1, 2], [2, 2], [3, 3]]
    assert b.val.tolist() == [[0, 1], [1, 1], [2, 1], [3, 2]]
    assert b.train.tolist() == [[0, 0], [1, 0], [2, 3], [3, 0], [3, 1]]


def test_no_leakage(tiny) -> None:
    rates = {tuple(p) for p in tiny.graph[RATES].edge_index.t().tolist()}
    held = {tuple(p) for p in tiny.val.tolist() + tiny.test.tolist()}
    assert rates == {tuple(p) for p in tiny.train.tolist()}
    assert not rates & held
    rev = {tuple(p) for p in tiny.graph[REV_RATES].edge_index.flip(0).t().tolist()}
    assert rev == rates


def _edges(bundle, etype) -> dict[tuple[int, int], float]:
    store = bundle.graph[etype]
    return {tuple(e): round(float(w), 5) for e, w in zip(store.edge_index.t().tolist(), store.edge_weight.tolist())}


def test_tags_by_hand(tiny) -> None:
    assert load_vocab(tiny.path, "tag") == ["10", "11", "12", "13"]
    got = _edges(tiny, (BOOK, "has_tag", "tag"))
    want = {(0, 0): 50, (0, 2): 7, (1, 0): 40, (1, 3): 9, (2, 1): 30, (2, 3): 8, (3, 1): 2}
    assert got == {k: round(math.log1p(v), 5) for k, v in want.items()}
    rev = _edges(tiny, ("tag", "rev_has_tag", BOOK))
    assert rev == {(t, b): w for (b, t), w in got.items()}


def test_authors_language_years(tiny) -> None:
    assert load_vocab(tiny.path, "author") == ["Ann Lee", "Bob Ray", "Cy Dee", "Dee Cy"]
    assert sorted(_edges(tiny, (BOOK, "written_by", "author"))) == [(0, 0), (0, 1), (1, 0), (2, 1), (2, 2), (3, 3)]
    assert load_vocab(tiny.path, "language") == ["en-US", "eng", "unk"]
    assert sorted(_edges(tiny, (BOOK, "in_language", "language"))) == [(0, 1), (1, 0), (2, 2), (3, 1)]
    assert load_vocab(tiny.path, "year_bin") == ["<=1950", "1951-1970", "1971-1990", "1991-2005",
                                                 "2006-2015", "2016+", "unknown"]
    assert sorted(_edges(tiny, (BOOK, "published_in", "year_bin"))) == [(0, 0), (1, 0), (2, 3), (3, 6)]


def test_similarity_by_hand(tiny) -> None:
    got = _edges(tiny, SIMILAR)
    a, b = round(8 / math.sqrt(88), 5), round(5 / math.sqrt(40), 5)
    assert got == {(0, 1): a, (1, 0): a, (2, 3): b, (3, 2): b}


def test_similarity_top_k_and_threshold(tmp_path) -> None:
    path, _ = build_bundle(_cfg(sim_top_k=2), out=tmp_path / "b2")
    pairs = set(_edges(load_bundle(path), SIMILAR))
    assert pairs == {(0, 1), (1, 0), (2, 3), (3, 2), (0, 2), (2, 0)}  # cos(b1,b3)=3/sqrt(88)=0.32
    path, _ = build_bundle(_cfg(sim_top_k=2, sim_min=0.5), out=tmp_path / "b3")
    assert set(_edges(load_bundle(path), SIMILAR)) == {(0, 1), (1, 0), (2, 3), (3, 2)}


def _cfg(**kw) -> DataConfig:
    base = dict(source="goodbooks", raw_dir=str(TINY), min_user_interactions=3, min_book_interactions=2,
                tag_min_books=2, tag_top_per_book=2, sim_top_k=1)
    base.update(kw)
    return DataConfig(**base)


def test_edge_dtypes(tiny) -> None:
    for etype in tiny.graph.edge_types:
        assert str(tiny.graph[etype].edge_index.dtype) == "torch.int64"
        assert str(tiny.graph[etype].edge_weight.dtype) == "torch.float32"
    assert tiny.graph[USER].num_nodes == 4
    assert np.all(tiny.train.numpy() >= 0)
