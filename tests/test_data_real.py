"""The real Goodbooks-10k metadata (books.csv, tags.csv, book_tags.csv.gz from ../shared) builds
Graph3 with the counts recorded in docs/DATA.md. Every book is kept (five users rate all of them),
so the side relations are those of the whole catalogue."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from graphrec_dist.config import DataConfig
from graphrec_dist.data.prepare import build_bundle
from graphrec_dist.data.store import load_bundle, load_vocab

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "goodbooks-10k"
pytestmark = pytest.mark.skipif(not (SHARED / "book_tags.csv.gz").is_file(), reason="real metadata not present")


def test_real_metadata_counts(tmp_path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("books.csv", "tags.csv", "book_tags.csv.gz"):
        shutil.copyfile(SHARED / name, raw / name)
    users, books = np.repeat(np.arange(1, 6), 10000), np.tile(np.arange(1, 10001), 5)
    pd.DataFrame({"user_id": users, "book_id": books, "rating": 5}).to_csv(raw / "ratings.csv", index=False)
    (raw / "to_read.csv").write_text("user_id,book_id\n")
    path, _ = build_bundle(DataConfig(source="goodbooks"), raw, tmp_path / "bundle")
    counts = load_bundle(path).meta["counts"]
    assert {k: v for k, v in counts["num_nodes"].items() if k != "user"} == {
        "book": 10000, "tag": 5153, "author": 5841, "language": 26, "year_bin": 7}
    edges = counts["num_edges"]
    assert edges["book__has_tag__tag"] == 499884
    assert edges["book__similar_to__book"] == 341598
    assert edges["book__written_by__author"] == 13209
    assert edges["book__in_language__language"] == edges["book__published_in__year_bin"] == 10000
    assert "unk" in load_vocab(path, "language")
    assert load_vocab(path, "author")[:1] != [""]
