"""Bad input: each case gives a clear error naming the file (and line/column), exit code 2, and
leaves no bundle and no temporary directory behind."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from graphrec_dist.cli import main as cli_main

TINY = Path(__file__).parent / "fixtures" / "data" / "tiny"
SMALL = ["data.min_user_interactions=3", "data.min_book_interactions=2"]


def _raw(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(TINY, raw)
    return raw


def _build(tmp_path: Path, raw: Path, capsys, *extra: str) -> tuple[int, str]:
    out = tmp_path / "bundles" / "b"
    code = cli_main(["data", "build", "--source", "goodbooks", "--raw-dir", str(raw), "--out", str(out),
                     *SMALL, *extra])
    err = capsys.readouterr().err
    bundles = tmp_path / "bundles"
    assert not bundles.exists() or list(bundles.iterdir()) == [], "something was left behind"
    return code, err


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_missing_file(tmp_path, capsys) -> None:
    raw = _raw(tmp_path)
    (raw / "to_read.csv").unlink()
    code, err = _build(tmp_path, raw, capsys)
    assert code == 2 and "missing input file" in err and "to_read.csv" in err


def test_misnamed_column(tmp_path, capsys) -> None:
    raw = _raw(tmp_path)
    _edit(raw / "ratings.csv", "user_id,book_id,rating", "user,book_id,rating")
    code, err = _build(tmp_path, raw, capsys)
    assert code == 2 and "ratings.csv" in err and "missing column(s) 'user_id'" in err


def test_empty_file(tmp_path, capsys) -> None:
    raw = _raw(tmp_path)
    (raw / "books.csv").write_text("")
    code, err = _build(tmp_path, raw, capsys)
    assert code == 2 and "books.csv" in err and "empty" in err


def test_non_numeric_id(tmp_path, capsys) -> None:
    raw = _raw(tmp_path)
    _edit(raw / "ratings.csv", "2,1,4\n", "two,1,4\n")
    code, err = _build(tmp_path, raw, capsys)
    assert code == 2 and "ratings.csv" in err and "'user_id', line 5" in err and "'two'" in err


def test_rating_out_of_range(tmp_path, capsys) -> None:
    raw = _raw(tmp_path)
    _edit(raw / "ratings.csv", "5,3,5\n", "5,3,7\n")
    code, err = _build(tmp_path, raw, capsys)
    assert code == 2 and "ratings.csv" in err and "'rating', line 14" in err and "1..5" in err


def test_truncated_gzip(tmp_path, capsys) -> None:
    raw = _raw(tmp_path)
    blob = gzip.compress((raw / "book_tags.csv").read_bytes() * 50)
    (raw / "book_tags.csv").unlink()
    (raw / "book_tags.csv.gz").write_bytes(blob[: len(blob) // 2])
    code, err = _build(tmp_path, raw, capsys)
    assert code == 2 and "book_tags.csv.gz" in err and "gzip" in err


def test_garbled_gzip(tmp_path, capsys) -> None:
    raw = _raw(tmp_path)
    (raw / "ratings.csv").unlink()
    (raw / "ratings.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    code, err = _build(tmp_path, raw, capsys)
    assert code == 2 and "ratings.csv.gz" in err


def test_unknown_config_key(tmp_path, capsys) -> None:
    code, err = _build(tmp_path, _raw(tmp_path), capsys, "data.min_ratin=3")
    assert code == 2 and "data.min_ratin" in err


def test_unknown_item_ids(tmp_path, capsys) -> None:
    raw = _raw(tmp_path)
    _edit(raw / "books.csv", "\n4,104,Dee Cy,-300,Blue Ocean Deep,eng,200", "")
    code, err = _build(tmp_path, raw, capsys)
    assert code == 2 and "books.csv" in err and "not in column 'book_id'" in err and "[4]" in err


def test_nothing_left_after_filter(tmp_path, capsys) -> None:
    code, err = _build(tmp_path, _raw(tmp_path), capsys, "data.min_user_interactions=50")
    assert code == 2 and "no interactions left" in err


def test_failed_rebuild_keeps_old_bundle(tmp_path, capsys) -> None:
    raw = _raw(tmp_path)
    out = tmp_path / "keep" / "b"
    args = ["data", "build", "--source", "goodbooks", "--raw-dir", str(raw), "--out", str(out), *SMALL]
    assert cli_main(args) == 0
    before = (out / "meta.json").read_bytes()
    _edit(raw / "ratings.csv", "5,3,5\n", "5,3,0\n")
    assert cli_main(args + ["--force"]) == 2
    assert (out / "meta.json").read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["b"]


def test_a_garbled_meta_json_exits_2_and_is_rebuilt_only_with_force(tmp_path, capsys) -> None:
    raw = _raw(tmp_path)
    out = tmp_path / "keep" / "b"
    build = ["data", "build", "--source", "goodbooks", "--raw-dir", str(raw), "--out", str(out), *SMALL]
    assert cli_main(build) == 0
    (out / "meta.json").write_text('{"schema_version": 1, "counts": {')
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    train = ["train", "configs/debug.yaml", "data.source=goodbooks", f"data.raw_dir={raw}", f"data.bundle_dir={out}",
             f"run.out_dir={tmp_path / 'run'}", *SMALL]
    for command in (train, build):
        capsys.readouterr()
        assert cli_main(command) == 2, command[0]
        err = capsys.readouterr().err
        assert f"{out / 'meta.json'} is garbled" in err and "--force" in err, err
        assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert not (tmp_path / "run").exists()
    assert cli_main(build + ["--force"]) == 0
    assert json.loads((out / "meta.json").read_text())["schema_version"] == 1


# -- a damaged bundle, as evaluate/recommend read it ------------------------------------------

def _toy_run(tmp_path: Path) -> Path:
    """A run directory (best.pt of an untrained mf) whose config names a saved toy bundle."""

    from test_sampling import toy_bundle

    from graphrec_dist import checkpoint, run_dir
    from graphrec_dist.config import load_config
    from graphrec_dist.data.store import save_bundle
    from graphrec_dist.models import build_model

    bundle_dir = save_bundle(toy_bundle(), tmp_path / "bundle")
    cfg = load_config(None, [f"data.bundle_dir={bundle_dir}", "model.name=mf", "model.emb_dim=8"])
    state = {"model": build_model(cfg, toy_bundle()).state_dict(), "config": cfg.to_dict()}
    checkpoint.save_checkpoint(tmp_path / "run" / run_dir.BEST, state)
    return tmp_path / "run"


def _meta(bundle: Path, **changes) -> None:
    meta = json.loads((bundle / "meta.json").read_text())
    (bundle / "meta.json").write_text(json.dumps({**meta, **changes}))


BUNDLE_DAMAGE = {
    "garbled_meta": (lambda b: (b / "meta.json").write_text('{"schema_version": 1, "counts": {'),
                     ["meta.json is garbled", "--force"]),
    "meta_not_an_object": (lambda b: (b / "meta.json").write_text("[1, 2]\n"), ["meta.json is garbled"]),
    "missing_npy": (lambda b: (b / "splits" / "test.npy").unlink(), ["test.npy is missing", "--force"]),
    "truncated_npy": (lambda b: (b / "graph" / "user__rates__book.edge_index.npy").write_bytes(
        (b / "graph" / "user__rates__book.edge_index.npy").read_bytes()[:150]),
                      ["user__rates__book.edge_index.npy is truncated or garbled", "--force"]),
    "empty_npy": (lambda b: (b / "splits" / "train.npy").write_bytes(b""), ["train.npy is truncated or garbled"]),
    "old_schema": (lambda b: _meta(b, schema_version=0), ["schema version 0", "reads version 1", "--force"]),
}


@pytest.mark.parametrize("damage", sorted(BUNDLE_DAMAGE))
@pytest.mark.parametrize("command", [["evaluate", "--run"], ["recommend", "--index", "0", "--run"]])
def test_a_damaged_bundle_exits_2_naming_the_file(tmp_path, capsys, damage: str, command: list[str]) -> None:
    run = _toy_run(tmp_path)
    change, names = BUNDLE_DAMAGE[damage]
    change(tmp_path / "bundle")
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert cli_main([*command, str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"graphrec-dist {command[0]}: error: "), err
    for name in [str(tmp_path / "bundle"), *names]:
        assert name in err, (name, err)
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before
