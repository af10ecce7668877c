import copy
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_sampling import toy_bundle

from graphrec_dist import checkpoint, run_dir
from graphrec_dist.cli import main as cli_main
from graphrec_dist.config import load_config
from graphrec_dist.data.store import save_bundle
from graphrec_dist.distributed import DistContext
from graphrec_dist.errors import DataError, UserError
from graphrec_dist.models import build_model


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    state = {"model": {"w": torch.arange(3.0)}, "config": {"a": 1}, "rng": [checkpoint.rng_state()]}
    checkpoint.save_checkpoint(tmp_path / "x.pt", state)
    back = checkpoint.load_checkpoint(tmp_path / "x.pt")
    assert torch.equal(back["model"]["w"], torch.arange(3.0)) and back["config"] == {"a": 1}


def test_a_failed_save_keeps_the_old_checkpoint_and_leaves_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    checkpoint.save_checkpoint(path, {"model": {"v": torch.tensor(1)}, "config": {}})

    def broken_save(obj, f):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(path, {"model": {"v": torch.tensor(2)}, "config": {}})
    monkeypatch.undo()
    assert int(checkpoint.load_checkpoint(path)["model"]["v"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_broken_or_foreign_files_are_data_errors_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="bad.pt"):
        checkpoint.load_checkpoint(bad)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="not a graphrec_dist checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(DataError, match="not found"):
        checkpoint.load_checkpoint(tmp_path / "missing.pt")


def test_resume_path_modes(tmp_path: Path) -> None:
    assert checkpoint.resume_path(tmp_path, "auto") is None
    (tmp_path / "last.pt").write_bytes(b"x")
    assert checkpoint.resume_path(tmp_path, "auto") == tmp_path / "last.pt"
    assert checkpoint.resume_path(tmp_path, "never") is None
    with pytest.raises(UserError, match="train.resume=nope.pt"):
        checkpoint.resume_path(tmp_path, "nope.pt")


def test_rng_state_round_trip() -> None:
    state = checkpoint.rng_state()
    first = (torch.rand(2), np.random.rand(), random.random())
    checkpoint.set_rng_state(state)
    second = (torch.rand(2), np.random.rand(), random.random())
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]


def test_load_run_rebuilds_the_trained_model_with_overrides(tmp_path: Path) -> None:
    bundle_dir = save_bundle(toy_bundle(), tmp_path / "bundle")
    cfg = load_config(None, [f"data.bundle_dir={bundle_dir}", "model.emb_dim=8", "model.hidden_dim=8"])
    torch.manual_seed(3)
    model = build_model(cfg, toy_bundle())
    run = tmp_path / "run"
    checkpoint.save_checkpoint(run / run_dir.BEST, {"model": model.state_dict(), "config": cfg.to_dict()})
    cfg2, model2, bundle2 = checkpoint.load_run(run, ["eval.ks=[5]"])
    assert cfg2.eval.ks == [5] and cfg2.model.emb_dim == 8
    users = torch.arange(4)
    expected = model.scorer(bundle2, DistContext()).scores(users)
    assert torch.allclose(model2.scorer(bundle2, DistContext()).scores(users), expected)
    with pytest.raises(DataError, match="holds no best.pt"):
        checkpoint.load_run(tmp_path / "bundle")


def _damaged(whole: bytes, how: str) -> bytes:
    """``whole`` (a saved checkpoint) cut short or with one byte flipped where ``how`` says."""
    if how == "empty":
        return b""
    if how == "truncated":
        return whole[: len(whole) * 2 // 3]
    marker = {"tensor_byte": torch.full((64,), 1.25).numpy().tobytes(), "pickle_byte": b"config"}[how]
    at = whole.index(marker) + 5
    return whole[:at] + bytes([whole[at] ^ 0x5A]) + whole[at + 1:]


@pytest.mark.parametrize("how", ["empty", "truncated", "tensor_byte", "pickle_byte"])
def test_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path: Path, how: str) -> None:
    # A flipped byte in a tensor loads without complaint from torch.load (wrong weights); the
    # archive's CRC-32 check is what refuses it.
    path = tmp_path / "last.pt"
    checkpoint.save_checkpoint(path, {"model": {"w": torch.full((64,), 1.25)}, "trainer": {"epoch": 3}, "config": {}})
    path.write_bytes(_damaged(path.read_bytes(), how))
    with pytest.raises(DataError, match=f"checkpoint {path} is truncated or garbled .*; use another"):
        checkpoint.load_checkpoint(path, what_to_do="use another")


@pytest.fixture()
def toy_run(tmp_path: Path) -> Path:
    """A run directory (best.pt and last.pt of an untrained mf) over a saved toy bundle."""
    bundle_dir = save_bundle(toy_bundle(), tmp_path / "bundle")
    cfg = load_config(None, [f"data.bundle_dir={bundle_dir}", "model.name=mf", "model.emb_dim=8"])
    torch.manual_seed(0)
    state = {"model": build_model(cfg, toy_bundle()).state_dict(), "config": cfg.to_dict()}
    for name in (run_dir.BEST, run_dir.LAST):
        checkpoint.save_checkpoint(tmp_path / "run" / name, state)
    return tmp_path / "run"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _exits_2(argv: list[str], capsys, *names: str) -> str:
    """``graphrec-dist ARGV`` gives exit code 2 and one error line naming each of ``names``."""
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"graphrec-dist {argv[0]}: error: "), err
    for name in names:
        assert name in err, (name, err)
    return err


@pytest.mark.parametrize("command", [["evaluate", "--run"], ["recommend", "--index", "0", "--run"]])
def test_a_garbled_best_checkpoint_exits_2_pointing_at_last(toy_run: Path, capsys, command: list[str]) -> None:
    best = toy_run / run_dir.BEST
    best.write_bytes(_damaged(best.read_bytes(), "pickle_byte"))
    before = _snapshot(toy_run.parent)
    _exits_2([*command, str(toy_run)], capsys, str(best), "truncated or garbled", str(toy_run / run_dir.LAST))
    assert _snapshot(toy_run.parent) == before


@pytest.mark.parametrize("command", [["evaluate", "--run"], ["recommend", "--index", "0", "--run"]])
def test_a_checkpoint_of_other_data_exits_2_naming_both(toy_run: Path, capsys, command: list[str]) -> None:
    # Another bundle with other node counts: the embedding tables do not fit.
    other = save_bundle(toy_bundle(num_users=25, num_books=18), toy_run.parent / "other_bundle")
    before = _snapshot(toy_run.parent)
    _exits_2([*command, str(toy_run), f"data.bundle_dir={other}"], capsys, str(toy_run / run_dir.BEST), str(other),
             "does not fit", "size mismatch", "data.bundle_dir=")
    assert _snapshot(toy_run.parent) == before


def old_layout(tree: dict) -> dict:
    """A config mapping as runs saved it before ``model.path`` and ``debug`` were sections: the
    path options flat in ``model`` (``model.path`` the list of relations), the test switches in
    ``train``, and ``eval.infer_batch``, retired before that."""
    tree = copy.deepcopy(tree)
    path = tree["model"].pop("path")
    tree["model"]["path"] = path.pop("relations")
    tree["model"].update({f"path_{key}": value for key, value in path.items()})
    tree["train"].update(tree.pop("debug"))
    tree["eval"]["infer_batch"] = 4096
    return tree


def test_a_run_saved_in_the_previous_config_layout_evaluates_to_its_own_test_metrics(tmp_path: Path, capsys) -> None:
    from graphrec_dist import evaluate, train

    run = tmp_path / "run"
    train.main(["configs/debug.yaml", f"data.raw_dir={tmp_path / 'raw'}", f"data.bundle_dir={tmp_path / 'bundle'}",
                f"run.out_dir={run}", "train.epochs=1", "train.max_steps=3", "train.mode=full_graph",
                "model.path.relations=[similar]", "model.path.top_k=7", "model.path.init=0.5"])
    saved = json.loads((run / run_dir.TEST_METRICS).read_text())
    cfg = load_config(run / run_dir.CONFIG)
    (run / run_dir.CONFIG).write_text(yaml.safe_dump(old_layout(cfg.to_dict()), sort_keys=False))
    for name in (run_dir.BEST, run_dir.LAST):
        state = checkpoint.load_checkpoint(run / name)
        state["config"] = old_layout(state["config"])
        assert "path_top_k" in state["config"]["model"] and "debug" not in state["config"]
        torch.save(state, run / name)
    assert load_config(run / run_dir.CONFIG) == cfg
    checkpoint.check_same_model(cfg, checkpoint.load_checkpoint(run / run_dir.LAST), run / run_dir.LAST, "")
    capsys.readouterr()
    assert cli_main(["evaluate", "--run", str(run), "--split", "test"]) == 0
    printed = json.loads(capsys.readouterr().out)
    result = evaluate.main(["--run", str(run), "--split", "test"])
    metrics = [k for k in saved if "@" in k or k in ("mrr", "num_users")]
    assert len(metrics) > 4 and {k: printed[k] for k in metrics} == {k: saved[k] for k in metrics}
    assert {k: result[k] for k in metrics} == {k: saved[k] for k in metrics}
