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


def test_the_real_ratings_spec_is_the_goodbooks_recipe_with_another_ratings_file() -> None:
    import dataclasses

    from graphrec_dist.data.spec import goodbooks_spec, load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "configs" / "data" / "goodbooks-ratings.yaml")
    preset = goodbooks_spec()
    assert spec.interactions == dataclasses.replace(preset.interactions, file="ratings_subset")
    assert spec.extra_interactions is None  # the subset has no to_read.csv
    assert (spec.items, spec.item_tags, spec.users, spec.extra_files) == (
        preset.items, preset.item_tags, preset.users, preset.extra_files)


@pytest.mark.skipif(not (SHARED / "ratings_subset.csv").is_file(), reason="real ratings not present")
def test_real_goodbooks_ratings_build_graph3(tmp_path) -> None:
    """The real ratings (2,672 users) with the real metadata: the counts docs/DATA.md records."""
    cfg = DataConfig(source="csv", csv_spec="configs/data/goodbooks-ratings.yaml")
    path, _ = build_bundle(cfg, SHARED, tmp_path / "bundle")
    counts = load_bundle(path).meta["counts"]
    assert counts["num_nodes"]["user"] == 2668 and counts["num_nodes"]["book"] == 7770
    assert counts["splits"] == {"train": 192177, "val": 2668, "test": 2668}
    assert counts["num_edges"]["book__has_tag__tag"] == 388453
