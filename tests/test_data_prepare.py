"""prepare_bundle end to end on generated data: cache hits, --force, byte-for-byte reproducibility,
read-only loading, meta.json and regeneration when the generator settings change."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import bounded
import pytest

from graphrec_dist.cli import main as cli_main
from graphrec_dist.config import DataConfig
from graphrec_dist.data.bundle import RATES
from graphrec_dist.data.prepare import build_bundle, prepare_bundle
from graphrec_dist.data.store import SCHEMA_VERSION, load_bundle


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth300(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    cfg = DataConfig(raw_dir=str(root / "raw"), bundle_dir=str(root / "bundle"), synth_users=300)
    return cfg, prepare_bundle(cfg)


def test_prepare_synth(synth300) -> None:
    cfg, bundle = synth300
    assert bundle.num_users == 300
    assert set(bundle.graph.node_types) == {"user", "book", "tag", "author", "language", "year_bin"}
    assert len(bundle.graph.edge_types) == 11
    assert bundle.val.shape == bundle.test.shape == (300, 2)
    assert bundle.graph[RATES].edge_index.shape[1] == bundle.train.shape[0]
    rates = {tuple(p) for p in bundle.graph[RATES].edge_index.t().tolist()}
    assert not rates & {tuple(p) for p in bundle.val.tolist() + bundle.test.tolist()}
    assert {"book_id", "title", "authors"} <= set(bundle.books.columns)
    assert list(bundle.users.columns) == ["user_id"]
    for name in ("ratings.csv", "to_read.csv", "books.csv", "book_tags.csv", "tags.csv"):
        assert (Path(cfg.raw_dir) / name).is_file()


def test_meta(synth300) -> None:
    cfg, bundle = synth300
    meta = bundle.meta
    assert meta["schema_version"] == SCHEMA_VERSION
    assert len(meta["recipe_hash"]) == 16 and meta["recipe"]["config"]["min_rating"] == 4
    assert set(meta["inputs"]) == {"interactions", "extra_interactions", "items", "item_tags", "tags"}
    assert all(len(v["sha256"]) == 64 for v in meta["inputs"].values())
    counts = meta["counts"]
    assert counts["num_nodes"]["user"] == 300
    assert counts["splits"] == {"train": bundle.train.shape[0], "val": 300, "test": 300}
    assert counts["num_edges"]["book__rev_rates__user"] == counts["num_edges"]["user__rates__book"]


def test_cache_hit_force_and_reproducible(synth300, tmp_path) -> None:
    cfg, _ = synth300
    before = _tree_digest(Path(cfg.bundle_dir))
    path, built = build_bundle(cfg)
    assert not built
    path, built = build_bundle(cfg, force=True)
    assert built and _tree_digest(path) == before
    other, built = build_bundle(cfg, out=tmp_path / "copy")  # another directory, same bytes
    assert built and _tree_digest(other) == before


def test_recipe_change_rebuilds(synth300, tmp_path) -> None:
    cfg, _ = synth300
    out = tmp_path / "b"
    build_bundle(cfg, out=out)
    changed = DataConfig(**{**cfg.__dict__, "sim_top_k": 5})
    _, built = build_bundle(changed, out=out)
    assert built
    _, built = build_bundle(changed, out=out)
    assert not built


def test_load_is_read_only(synth300) -> None:
    cfg, _ = synth300
    root = Path(cfg.bundle_dir)
    stamp = {p: os.stat(p).st_mtime_ns for p in root.rglob("*")}
    os.chmod(root, 0o555)
    try:
        load_bundle(root)
    finally:
        os.chmod(root, 0o755)
    assert {p: os.stat(p).st_mtime_ns for p in root.rglob("*")} == stamp


def test_generator_deterministic_and_regenerates(tmp_path) -> None:
    from graphrec_dist.data.synth import generate

    a, b = generate(tmp_path / "a", users=120, seed=3), generate(tmp_path / "b", users=120, seed=3)
    assert _tree_digest(a) == _tree_digest(b)
    c = generate(tmp_path / "c", users=120, seed=4)
    assert (c / "ratings.csv").read_bytes() != (a / "ratings.csv").read_bytes()
    cfg = DataConfig(raw_dir=str(a), bundle_dir=str(tmp_path / "bundle"), synth_users=150, synth_seed=3)
    assert prepare_bundle(cfg).num_users == 150  # stamp differs from the config: regenerated


def test_cli_build(tmp_path, capsys) -> None:
    raw, out = tmp_path / "raw", tmp_path / "bundle"
    assert cli_main(["data", "synth", "--out", str(raw), "--users", "200", "--seed", "1"]) == 0
    args = ["data", "build", "--source", "goodbooks", "--raw-dir", str(raw), "--out", str(out)]
    assert cli_main(args) == 0
    assert "built:" in capsys.readouterr().out
    assert cli_main(args) == 0
    assert "cache hit" in capsys.readouterr().out
    assert cli_main(args + ["--force"]) == 0
    assert "built:" in capsys.readouterr().out
    assert cli_main(["data", "synth", "--out", str(raw), "--users", "0"]) == 2


def test_save_bundle_round_trip(synth300, tmp_path) -> None:
    from graphrec_dist.data.store import save_bundle

    _, bundle = synth300
    path = save_bundle(bundle, tmp_path / "saved", vocab={"tag": ["a"]})
    again = load_bundle(path)
    assert again.meta["counts"] == bundle.meta["counts"]
    assert again.train.equal(bundle.train) and again.test.equal(bundle.test)
    for etype in bundle.graph.edge_types:
        assert again.graph[etype].edge_weight.equal(bundle.graph[etype].edge_weight)
    assert again.books.equals(bundle.books)


@pytest.mark.multiproc
def test_two_processes_prepare_the_same_bundle(tmp_path) -> None:
    import subprocess
    import sys

    code = ("from graphrec_dist.logging_utils import setup_logging; setup_logging(); "
            "from graphrec_dist.config import DataConfig; "
            "from graphrec_dist.data.prepare import prepare_bundle; "
            f"b = prepare_bundle(DataConfig(raw_dir=r'{tmp_path / 'raw'}', bundle_dir=r'{tmp_path / 'b'}', "
            "synth_users=120)); print(b.num_users)")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = bounded.communicate_all(procs, timeout_s=300)
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o[0].strip() for o in outs] == ["120", "120"]
    logs = "".join(o[1] for o in outs)
    assert logs.count("generating 120 synthetic users") == 1 and logs.count("building Graph3") == 1


def test_series_read_in_order(synth300) -> None:
    import pandas as pd

    from graphrec_dist.data.synth import parse_series

    assert parse_series(["A (The Saga, #2)", "B (X, #1.5)", "Plain"])[0] == ["The Saga", "X", ""]
    cfg, _ = synth300
    raw = Path(cfg.raw_dir)
    books = pd.read_csv(raw / "books.csv").set_index("book_id")
    ratings = pd.read_csv(raw / "ratings.csv")
    names, volumes = parse_series(books.loc[ratings["book_id"], "title"].tolist())
    ratings["series"], ratings["volume"] = names, volumes
    in_series = ratings[ratings["series"] != ""]
    assert len(in_series) > 1000
    # File order is time order: within a user and a series, volumes never go down.
    steps = in_series.groupby(["user_id", "series"])["volume"].apply(lambda v: (v.diff().dropna() >= 0).all())
    assert steps.all()
