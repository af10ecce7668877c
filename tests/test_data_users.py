"""Bring-your-own-data with user-side metadata (the spec's ``users:`` key) and the MovieLens 100K spec.

By hand (min_rating=4, min_user_interactions=2, min_book_interactions=1, split last):
positives (1,10) (1,20) (2,10) (2,20) (2,30) (3,20) (3,30); user 4 has one positive -> gone.
Users 1,2,3 -> 0,1,2; items 10,20,30 -> 0,1,2. users.csv has users 1, 2, 4 (user 3 is absent,
user 4 is not kept): genres "Drama|Comedy" (1), "Drama" (2) -> vocab [Comedy, Drama],
edges (0,Comedy) (0,Drama) (1,Drama); country NL for index 0 only (index 1's cell is empty); age
17 -> "<18", empty -> unknown; nothing at all for index 2 (user 3). Items carry two bins: year
(the old ``bin:`` key) 1990 -> old, 2005 -> new, empty -> unknown; minutes (``bins:``) 90, 120,
95 -> short, long, short.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from graphrec_dist.cli import main as cli_main
from graphrec_dist.config import DataConfig, SplitConfig
from graphrec_dist.data.build import input_files
from graphrec_dist.data.prepare import build_bundle, input_checksums
from graphrec_dist.data.spec import load_spec
from graphrec_dist.data.store import load_bundle, load_vocab
from graphrec_dist.errors import ConfigError, DataError

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens-100k"
ML100K_SPEC = Path(__file__).resolve().parents[1] / "configs" / "data" / "movielens-100k.yaml"

SPEC = {
    "interactions": {"file": "ratings", "user": "uid", "item": "mid", "rating": "stars"},
    "items": {"file": "movies", "id": "mid", "title": "name", "label": "movie",
              "bin": {"column": "year", "node_type": "decade", "edges": [1999, 2030],
                      "labels": ["old", "new", "unknown"]},
              "bins": [{"column": "minutes", "node_type": "length", "edges": [100, 1000],
                        "labels": ["short", "long", "unknown"]}]},
    "users": {"file": "people", "id": "person",
              "columns": {"fav_genre": {"column": "likes", "sep": "|"}, "country": {"column": "country",
                                                                                     "relation": "lives_in"}},
              "bins": [{"column": "age", "node_type": "age_group", "edges": [17, 34, 200],
                        "labels": ["<18", "18-34", "35+", "unknown"]}]},
}


def _write(root: Path, spec: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.csv").write_text(
        "uid,mid,stars\n1,10,5\n1,20,4\n2,10,4\n2,20,5\n2,30,4\n3,20,5\n3,30,4\n4,10,5\n1,30,2\n")
    (root / "movies.csv").write_text("mid,name,year,minutes\n10,Alpha,1990,90\n20,Beta,2005,120\n30,Gamma,,95\n")
    (root / "people.csv").write_text(
        "person,likes,country,age,extra\n4,Horror,FR,60,x\n1,Drama|Comedy,NL,17,y\n2,Drama,,,z\n")
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _cfg(root: Path, spec_path: Path) -> DataConfig:
    return DataConfig(source="csv", raw_dir=str(root), csv_spec=str(spec_path), min_user_interactions=2,
                      min_book_interactions=1, split=SplitConfig(mode="last", min_interactions=3))


def _edges(bundle, etype) -> list[list[int]]:
    return sorted(bundle.graph[etype].edge_index.t().tolist())


def test_user_side_edges_by_hand(tmp_path) -> None:
    spec_path = _write(tmp_path / "raw", SPEC)
    path, _ = build_bundle(_cfg(tmp_path / "raw", spec_path), out=tmp_path / "b")
    b = load_bundle(path)
    assert b.users["user_id"].tolist() == [1, 2, 3] and b.books["book_id"].tolist() == [10, 20, 30]
    assert b.meta["counts"]["num_nodes"] == {"user": 3, "book": 3, "decade": 3, "length": 3, "fav_genre": 2,
                                             "country": 1, "age_group": 4}
    assert load_vocab(path, "fav_genre") == ["Comedy", "Drama"]
    assert _edges(b, ("user", "has_fav_genre", "fav_genre")) == [[0, 0], [0, 1], [1, 1]]
    assert _edges(b, ("fav_genre", "rev_has_fav_genre", "user")) == [[0, 0], [1, 0], [1, 1]]
    assert load_vocab(path, "country") == ["NL"]
    assert _edges(b, ("user", "lives_in", "country")) == [[0, 0]]  # user 2's country is empty
    assert load_vocab(path, "age_group") == ["<18", "18-34", "35+", "unknown"]
    assert _edges(b, ("user", "has_age_group", "age_group")) == [[0, 0], [1, 3]]  # user 3 absent: none
    assert b.graph["user", "has_age_group", "age_group"].edge_weight.tolist() == [1.0, 1.0]
    assert _edges(b, ("book", "has_decade", "decade")) == [[0, 0], [1, 1], [2, 2]]
    assert _edges(b, ("book", "has_length", "length")) == [[0, 0], [1, 1], [2, 0]]
    assert b.item_label == "movie" and b.meta["recipe"]["spec"]["users"]["file"] == "people"


def test_users_file_is_checksummed(tmp_path) -> None:
    spec_path = _write(tmp_path / "raw", SPEC)
    cfg = _cfg(tmp_path / "raw", spec_path)
    files = input_files(cfg.raw_dir, load_spec(spec_path))
    assert files["users"].name == "people.csv"
    path, built = build_bundle(cfg, out=tmp_path / "b")
    assert built and "users" in load_bundle(path).meta["inputs"]
    assert not build_bundle(cfg, out=tmp_path / "b")[1]
    with open(tmp_path / "raw" / "people.csv", "a") as fh:
        fh.write("3,Horror,DE,40,w\n")
    assert build_bundle(cfg, out=tmp_path / "b")[1]
    assert input_checksums(files)["users"]["file"] == "people.csv"
    assert _edges(load_bundle(path), ("user", "has_age_group", "age_group")) == [[0, 0], [1, 3], [2, 2]]


@pytest.mark.parametrize("where, column", [("columns", "likes_it"), ("bins", "birth_age"), ("id", "pid")])
def test_missing_users_column_is_a_data_error(tmp_path, capsys, where, column) -> None:
    spec = yaml.safe_load(yaml.safe_dump(SPEC))
    if where == "columns":
        spec["users"]["columns"]["fav_genre"]["column"] = column
    elif where == "bins":
        spec["users"]["bins"][0]["column"] = column
    else:
        spec["users"]["id"] = column
    spec_path = _write(tmp_path / "raw", spec)
    with pytest.raises(DataError, match=rf"people.csv: missing column\(s\) '{column}'"):
        build_bundle(_cfg(tmp_path / "raw", spec_path), out=tmp_path / "b")
    assert not (tmp_path / "b").exists()
    code = cli_main(["data", "build", "--source", "csv", "--csv-spec", str(spec_path), "--raw-dir",
                     str(tmp_path / "raw"), "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and column in err and "people.csv" in err


@pytest.mark.parametrize("clash", ["user", "book", "decade", "fav_genre"])
def test_node_type_clash_is_a_config_error(tmp_path, clash) -> None:
    spec = yaml.safe_load(yaml.safe_dump(SPEC))
    spec["users"]["bins"][0]["node_type"] = clash
    spec_path = _write(tmp_path / "raw", spec)
    with pytest.raises(ConfigError, match=rf"users.bins of 'age': node type '{clash}' is already made by"):
        build_bundle(_cfg(tmp_path / "raw", spec_path), out=tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_bin_labels_must_match_edges(tmp_path) -> None:
    spec = yaml.safe_load(yaml.safe_dump(SPEC))
    spec["users"]["bins"][0]["labels"] = ["<18", "18+"]
    with pytest.raises(ConfigError, match=r"users: bins\[0\]: bin of column 'age': 3 edges need 4 labels.*got 2"):
        load_spec(_write(tmp_path / "raw", spec))


@pytest.mark.skipif(not ML100K.is_dir(), reason=f"no MovieLens 100K at {ML100K}")
def test_movielens_100k_spec(tmp_path) -> None:
    cfg = DataConfig(source="csv", raw_dir=str(ML100K), csv_spec=str(ML100K_SPEC))
    path, _ = build_bundle(cfg, out=tmp_path / "ml")
    b = load_bundle(path)
    nodes = b.meta["counts"]["num_nodes"]
    assert (nodes["user"], nodes["book"]) == (938, 1008)  # SOURCES.txt: rating >= 4, 5-core
    assert (nodes["gender"], nodes["occupation"], nodes["age_group"], nodes["decade"]) == (2, 21, 8, 9)
    edges = b.meta["counts"]["num_edges"]
    for rel in ("has_gender", "has_occupation", "has_age_group"):  # every kept user is in users.csv
        assert edges[f"user__{rel}__{rel[len('has_'):]}"] == 938
    assert len(b.train) + len(b.val) + len(b.test) == 54413
    assert b.item_label == "movie"
