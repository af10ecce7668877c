"""The streamed partitioned build (data.stream_build): the same bundle as the in-memory build, byte
for byte, and the same partitions as ``write_partitions(load_bundle(...))``, on tiny generated
data with repeated pairs and chunks far smaller than the files; the inputs it does not handle take
the in-memory path; a bad line is named as before; a sharded run trains on what it wrote."""
from __future__ import annotations

import filecmp
from pathlib import Path

import pandas as pd
import pytest
import torch

from graphrec_dist.config import load_config
from graphrec_dist.data import cli as data_cli
from graphrec_dist.data.partition import PARTITIONS, partition_counts, write_partitions
from graphrec_dist.data.prepare import build_bundle, ensure_synth
from graphrec_dist.data.store import load_bundle
from graphrec_dist.data.stream_build import build_partitioned
from graphrec_dist.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "debug.yaml"
CHUNK = 211  # rows per chunk: the files (~5k rows) take many chunks, and a user's rows span several


def _cfg(raw: Path, bundle: Path, *extra: str):
    return load_config(str(CONFIG), [f"data.raw_dir={raw}", f"data.bundle_dir={bundle}", "data.synth_users=120",
                                     *extra]).data


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """Generated files plus repeated pairs: within ratings (a low then a high rating), within
    to_read, and to_read pairs already rated, so that keeping the first occurrence matters."""
    root = tmp_path_factory.mktemp("stream_raw") / "raw"
    ensure_synth(_cfg(root, root.parent / "unused"))
    ratings, to_read = pd.read_csv(root / "ratings.csv"), pd.read_csv(root / "to_read.csv")
    again = ratings.sample(300, random_state=0).assign(rating=lambda f: 6 - f["rating"])
    ratings = pd.concat([ratings, again], ignore_index=True)
    to_read = pd.concat([to_read, to_read.sample(50, random_state=1), ratings.sample(200, random_state=2)[
        ["user_id", "book_id"]]], ignore_index=True)
    ratings.to_csv(root / "ratings.csv", index=False)
    to_read.to_csv(root / "to_read.csv", index=False)
    return root


def _files(root: Path) -> set[Path]:
    return {f.relative_to(root) for f in root.rglob("*") if f.is_file()}


def assert_same_bundle_dirs(a: Path, b: Path) -> None:
    """Every file equal byte for byte, but shard.pt (a zip whose bytes may vary): tensors equal."""
    assert _files(a) == _files(b)
    for rel in sorted(_files(a)):
        if rel.name != "shard.pt":
            assert filecmp.cmp(a / rel, b / rel, shallow=False), rel
            continue
        x, y = torch.load(a / rel, weights_only=False), torch.load(b / rel, weights_only=False)
        assert x.keys() == y.keys() and x["dst_stats"].keys() == y["dst_stats"].keys(), rel
        for key, value in x.items():
            if torch.is_tensor(value):
                assert value.dtype == y[key].dtype and torch.equal(value, y[key]), (rel, key)
            elif key != "dst_stats":
                assert value == y[key], (rel, key)
        for et, (deg, total) in x["dst_stats"].items():
            assert torch.equal(deg, y["dst_stats"][et][0]) and torch.equal(total, y["dst_stats"][et][1])
            assert total.dtype == y["dst_stats"][et][1].dtype == torch.float64


def _in_memory(raw: Path, out: Path, n: int, *extra: str) -> Path:
    path, _ = build_bundle(_cfg(raw, out, *extra))
    write_partitions(load_bundle(path), n)
    return path


@pytest.mark.parametrize("n, mode", [(2, "random"), (3, "random"), (3, "last")])
def test_streamed_bundle_and_partitions_equal_the_in_memory_build(raw: Path, tmp_path: Path, n: int,
                                                                   mode: str) -> None:
    extra = (f"data.split.mode={mode}",)
    expected = _in_memory(raw, tmp_path / "memory", n, *extra)
    res = build_partitioned(_cfg(raw, tmp_path / "stream", *extra), n, chunk_rows=CHUNK)
    assert (res.how, res.built, res.wrote_partitions) == ("streamed", True, True)
    assert partition_counts(res.path) == [n]
    assert_same_bundle_dirs(expected, res.path)
    whole = load_bundle(res.path)
    assert whole.content_hash() == load_bundle(expected).content_hash()
    # The duplicates went: no (user, book) pair is in two splits or twice in one.
    pairs = torch.cat([whole.train, whole.val, whole.test])
    assert len(torch.unique(pairs, dim=0)) == len(pairs)
    assert len(whole.val) == len(whole.test) > 0


def test_the_cli_streams_then_adds_partitions_to_a_current_bundle(raw: Path, tmp_path: Path, capsys) -> None:
    bundle = tmp_path / "stream"
    args = ["build", str(CONFIG), f"data.raw_dir={raw}", f"data.bundle_dir={bundle}", "data.synth_users=120"]
    assert data_cli.main([*args, "--partitions", "2"]).built
    assert "built (streamed)" in capsys.readouterr().out
    meta_time = (bundle / "meta.json").stat().st_mtime_ns
    # A current bundle gets the new set streamed beside its files; the files stay as they are.
    assert not data_cli.main([*args, "--partitions", "4"]).built
    out = capsys.readouterr().out
    assert "up to date (cache hit) (streamed)" in out and "user partitions: 4" in out
    assert (bundle / "meta.json").stat().st_mtime_ns == meta_time
    assert partition_counts(bundle) == [2, 4]
    expected = _in_memory(raw, tmp_path / "memory", 2)
    write_partitions(load_bundle(expected), 4)
    assert_same_bundle_dirs(expected, bundle)
    data_cli.main([*args, "--partitions", "4"])
    assert "user partitions" not in capsys.readouterr().out  # nothing left to do
    assert data_cli.main([*args, "--partitions", "2", "--in-memory", "--force"]).built
    assert "(in memory)" in capsys.readouterr().out
    assert partition_counts(bundle) == [2]


def test_inputs_the_stream_does_not_handle_are_built_in_memory(raw: Path, tmp_path: Path) -> None:
    extra = ("data.split.cold_items=0.1", "data.split.cold_users=0.1")
    res = build_partitioned(_cfg(raw, tmp_path / "b", *extra), 2, chunk_rows=CHUNK)
    assert res.how.startswith("in memory (the streamed build does not handle the inductive protocols")
    assert_same_bundle_dirs(_in_memory(raw, tmp_path / "memory", 2, *extra), res.path)


def test_a_bad_line_in_a_later_chunk_is_named(raw: Path, tmp_path: Path) -> None:
    bad = tmp_path / "raw"
    bad.mkdir()
    for f in raw.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    lines = (bad / "ratings.csv").read_text().splitlines()
    lines[1000] = lines[1000].rsplit(",", 1)[0] + ",9"  # file line 1001: a rating out of 1..5
    (bad / "ratings.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"ratings.csv: column 'rating', line 1001: value 9 outside"):
        build_partitioned(_cfg(bad, tmp_path / "b"), 2, chunk_rows=CHUNK)
    assert not (tmp_path / "b").exists()  # nothing written


def test_a_sharded_run_trains_on_the_streamed_partitions(raw: Path, tmp_path: Path) -> None:
    from graphrec_dist import train

    dirs = [f"data.raw_dir={raw}", f"data.bundle_dir={tmp_path / 'b'}", "data.synth_users=120"]
    build_partitioned(_cfg(raw, tmp_path / "b"), 2, chunk_rows=CHUNK)
    res = train.main([str(CONFIG), *dirs, f"run.out_dir={tmp_path / 'run'}", "dist.sharding=users",
                      "train.mode=full_graph", "train.loss=softmax", "train.epochs=1", "train.edges_per_epoch=512"])
    assert partition_counts(tmp_path / "b") == [2]  # the run read the 2 partitions, cut nothing more
    assert res.global_step > 0 and 0.0 < res.test_metrics["ndcg@10"] <= 1.0
    assert (tmp_path / "b" / PARTITIONS / "2" / "1" / "shard.pt").is_file()
