"""Bring-your-own-data: a MovieLens-shaped spec (half-star ratings, timestamps, multi-valued genres,
string tags, a binned year) built by hand-worked counts, and its spec errors.

By hand (min_rating=4, min_user_interactions=2, min_book_interactions=1, tag_min_books=2):
rows in time order: (3,40) (2,20) (2,10) [(2,30) 3.5 is not positive] (2,40) (1,20) (1,30) (1,10);
user 3 has one positive -> gone. Users 1,2 -> 0,1; movies 10,20,30,40 -> 0..3. last split:
u0 [1,2,0] -> test 0, val 2, train 1; u1 [1,0,3] -> test 3, val 0, train 1.
genres: Comedy|Drama, Drama, Comedy| Horror, (empty) -> 3 genres, 5 edges. directors Kim, Lee,
Kim, Park -> 3, 4 edges. decade: 1994 -> 1990s, missing -> unknown, 2001 -> 2000s, 1985 -> <1990.
tags: funny (10,20), scary (30,40) kept, classic (one movie) dropped -> 2 tags, 4 edges.
TF-IDF on names: only "story" has df 2 -> Alpha Story ~ Beta Story, cosine 1: 2 edges.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from graphrec_dist.cli import main as cli_main
from graphrec_dist.config import DataConfig, SplitConfig
from graphrec_dist.data.prepare import build_bundle
from graphrec_dist.data.store import load_bundle, load_vocab
from graphrec_dist.errors import ConfigError, DataError

SPEC = {
    "interactions": {"file": "interactions.csv", "user": "uid", "item": "mid", "rating": "stars",
                     "timestamp": "ts", "rating_min": 0.5, "rating_max": 5},
    "items": {"file": "movies.csv", "id": "movie_id", "title": "name",
              "columns": {"genre": {"column": "genres", "sep": "|"}, "director": "director"},
              "text": ["name"],
              "bin": {"column": "year", "node_type": "decade", "edges": [1989, 1999, 2009],
                      "labels": ["<1990", "1990s", "2000s", "unknown"]}},
    "item_tags": {"file": "movie_tags.csv", "item": "movie", "tag": "tag", "count": "n"},
}


def _write(root: Path, spec: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "interactions.csv").write_text(
        "uid,mid,stars,ts\n1,10,4.5,300\n1,20,5,100\n1,30,4,200\n2,10,4,50\n2,30,3.5,60\n2,40,5,70\n"
        "2,20,4,10\n3,40,5,5\n")
    (root / "movies.csv").write_text(
        "movie_id,name,genres,director,year\n10,Alpha Story,Comedy|Drama,Kim,1994\n20,Beta Story,Drama,Lee,\n"
        "30,Gamma,Comedy| Horror,Kim,2001\n40,Delta Tale,,Park,1985\n50,Unused,Western,Nobody,1960\n")
    (root / "movie_tags.csv").write_text("movie,tag,n\n10,funny,3\n20,funny,1\n30,scary,5\n40,scary,2\n10,classic,1\n")
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _cfg(root: Path, spec_path: Path) -> DataConfig:
    return DataConfig(source="csv", raw_dir=str(root), csv_spec=str(spec_path), min_user_interactions=2,
                      min_book_interactions=1, tag_min_books=2, split=SplitConfig(mode="last"))


def test_byod_by_hand(tmp_path) -> None:
    spec_path = _write(tmp_path / "raw", SPEC)
    path, _ = build_bundle(_cfg(tmp_path / "raw", spec_path), out=tmp_path / "b")
    b = load_bundle(path)
    counts = b.meta["counts"]
    assert counts["num_nodes"] == {"user": 2, "book": 4, "genre": 3, "director": 3, "decade": 4, "tag": 2}
    edges = counts["num_edges"]
    assert edges["book__has_genre__genre"] == 5 and edges["genre__rev_has_genre__book"] == 5
    assert edges["book__has_director__director"] == 4
    assert edges["book__has_decade__decade"] == 4
    assert edges["book__has_tag__tag"] == 4
    assert edges["book__similar_to__book"] == 2
    assert b.test.tolist() == [[0, 0], [1, 3]] and b.val.tolist() == [[0, 2], [1, 0]]
    assert b.train.tolist() == [[0, 1], [1, 1]]
    assert load_vocab(path, "genre") == ["Comedy", "Drama", "Horror"]
    assert load_vocab(path, "tag") == ["funny", "scary"]
    decade = b.graph["book", "has_decade", "decade"].edge_index
    assert decade[1].tolist() == [1, 3, 2, 0]
    assert b.books["title"].tolist() == ["Alpha Story", "Beta Story", "Gamma", "Delta Tale"]
    assert b.users["user_id"].tolist() == [1, 2]


def test_spec_names_unknown_column(tmp_path, capsys) -> None:
    spec = yaml.safe_load(yaml.safe_dump(SPEC))
    spec["items"]["columns"]["genre"]["column"] = "genre_list"
    spec_path = _write(tmp_path / "raw", spec)
    with pytest.raises(DataError, match=r"movies.csv: missing column\(s\) 'genre_list'"):
        build_bundle(_cfg(tmp_path / "raw", spec_path), out=tmp_path / "b")
    assert not (tmp_path / "b").exists()
    code = cli_main(["data", "build", "--source", "csv", "--csv-spec", str(spec_path), "--raw-dir",
                     str(tmp_path / "raw"), "--out", str(tmp_path / "b")])
    assert code == 2 and "genre_list" in capsys.readouterr().err


def test_spec_unknown_key(tmp_path) -> None:
    spec = yaml.safe_load(yaml.safe_dump(SPEC))
    spec["items"]["colums"] = {}
    spec_path = _write(tmp_path / "raw", spec)
    with pytest.raises(ConfigError, match="unknown key.*colums"):
        build_bundle(_cfg(tmp_path / "raw", spec_path), out=tmp_path / "b")


def _build_cli_exits_2(tmp_path: Path, spec_path: Path, capsys) -> str:
    """``data build`` of the csv spec: exit 2, an error line, and no bundle (nor temp dir) left."""
    out = tmp_path / "bundles" / "b"
    code = cli_main(["data", "build", "--source", "csv", "--csv-spec", str(spec_path), "--raw-dir",
                     str(spec_path.parent), "--out", str(out), "data.min_user_interactions=2",
                     "data.min_book_interactions=1"])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the log's "building" line
    assert code == 2 and err.startswith("graphrec-dist data: error: "), err
    assert list((tmp_path / "bundles").iterdir()) == [], "something was left behind"
    return err


def test_non_numeric_rating_exits_2_naming_file_and_line(tmp_path, capsys) -> None:
    spec_path = _write(tmp_path / "raw", SPEC)
    inter = tmp_path / "raw" / "interactions.csv"
    inter.write_text(inter.read_text().replace("2,30,3.5,60\n", "2,30,three,60\n"))
    err = _build_cli_exits_2(tmp_path, spec_path, capsys)
    assert f"{inter}: column 'stars', line 6: expected a number, got 'three'" in err


def test_duplicate_item_id_exits_2_naming_file_and_line(tmp_path, capsys) -> None:
    spec_path = _write(tmp_path / "raw", SPEC)
    movies = tmp_path / "raw" / "movies.csv"
    movies.write_text(movies.read_text().replace("50,Unused", "30,Unused"))
    err = _build_cli_exits_2(tmp_path, spec_path, capsys)
    assert f"{movies}: column 'movie_id', line 6: duplicate id 30" in err
