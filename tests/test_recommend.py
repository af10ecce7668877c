import json
from pathlib import Path

import pytest
import torch
from test_sampling import toy_bundle

from graphrec_dist.checkpoint import save_checkpoint
from graphrec_dist.cli import main as cli_main
from graphrec_dist.config import load_config
from graphrec_dist.data.store import save_bundle
from graphrec_dist.models import build_model
from graphrec_dist.recommend import format_text, main
from graphrec_dist.run_dir import BEST


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory holding a (randomly initialised) graphsage checkpoint over a toy bundle."""
    root = tmp_path_factory.mktemp("rec")
    bundle = toy_bundle()
    bundle.books["title"] = [f"Title {i}" for i in range(bundle.num_books)]
    bundle.books["authors"] = [f"Author {i}" for i in range(bundle.num_books)]
    bundle.users["user_id"] = [100 + u for u in range(bundle.num_users)]
    path = save_bundle(bundle, root / "bundle")
    cfg = load_config(None, [f"data.bundle_dir={path}", "model.emb_dim=8", "model.hidden_dim=8"])
    torch.manual_seed(0)
    model = build_model(cfg, bundle)
    save_checkpoint(root / "run" / BEST, {"model": model.state_dict(), "config": cfg.to_dict()})
    return root / "run"


def test_json_output_top_k_excludes_history_and_is_sorted(run_dir: Path, capsys) -> None:
    result = main(["--run", str(run_dir), "--user", "103", "--k", "4", "--format", "json", "--show-history", "0"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(result))
    assert printed["user_index"] == 3 and printed["user_id"] == 103
    recs = printed["recommendations"]
    assert len(recs) == 4 and [r["score"] for r in recs] == sorted((r["score"] for r in recs), reverse=True)
    history = {h["book_index"] for h in printed["history"]}
    assert len(history) == printed["history_size"] == 5
    assert not history & {r["book_index"] for r in recs}
    assert recs[0]["title"] == f"Title {recs[0]['book_index']}"


def test_k_larger_than_the_unseen_books_returns_all_unseen(run_dir: Path, capsys) -> None:
    result = main(["--run", str(run_dir), "--index", "0", "--k", "100", "--format", "json"])
    assert len(result["recommendations"]) == 15 - 5


def test_text_output_shows_both_columns(run_dir: Path, capsys) -> None:
    main(["--run", str(run_dir), "--user", "100", "--k", "3", "--show-history", "2"])
    out = capsys.readouterr().out
    assert "RECOMMENDED" in out and "HISTORY" in out and " 1. Title" in out and "... and 3 more" in out


def test_text_names_the_items_as_the_bundle_does(run_dir: Path, capsys) -> None:
    result = main(["--run", str(run_dir), "--index", "0", "--k", "2", "--show-history", "1"])
    assert result["item_label"] == "book"  # a bundle without a stored label, not csv data
    assert "top 2 of 15 books" in capsys.readouterr().out
    movie = dict(result, item_label="movie", recommendations=[dict(r, authors="") for r in result["recommendations"]])
    text = format_text(movie)
    assert "top 2 of 15 movies" in text and " 1. Title" in text and " - " not in text.splitlines()[3].split("|")[0]


@pytest.mark.parametrize("args, message", [(["--user", "7"], "--user 7: no such user id"),
                                           (["--index", "99"], "--index 99: expected 0..19"),
                                           (["--user", "100", "--k", "0"], "--k 0")])
def test_bad_input_exits_2_naming_the_problem(run_dir: Path, capsys, args, message) -> None:
    assert cli_main(["recommend", "--run", str(run_dir), *args]) == 2
    assert message in capsys.readouterr().err


def test_missing_run_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert cli_main(["recommend", "--run", str(tmp_path), "--user", "1"]) == 2
    assert "holds no best.pt" in capsys.readouterr().err
