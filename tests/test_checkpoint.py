import random
from pathlib import Path

import numpy as np
import pytest
import torch

from graphrec_dist import checkpoint as ckpt
from graphrec_dist.config import load_config
from graphrec_dist.data.store import save_bundle
from graphrec_dist.distributed import DistContext
from graphrec_dist.errors import DataError, UserError
from graphrec_dist.models import build_model
from test_sampling import toy_bundle


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    state = {"model": {"w": torch.arange(3.0)}, "config": {"a": 1}, "rng": [ckpt.rng_state()]}
    ckpt.save_checkpoint(tmp_path / "x.pt", state)
    back = ckpt.load_checkpoint(tmp_path / "x.pt")
    assert torch.equal(back["model"]["w"], torch.arange(3.0)) and back["config"] == {"a": 1}


def test_a_failed_save_keeps_the_old_checkpoint_and_leaves_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(path, {"model": {"v": torch.tensor(1)}, "config": {}})

    def broken_save(obj, f):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path, {"model": {"v": torch.tensor(2)}, "config": {}})
    monkeypatch.undo()
    assert int(ckpt.load_checkpoint(path)["model"]["v"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_broken_or_foreign_files_are_data_errors_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="bad.pt"):
        ckpt.load_checkpoint(bad)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="not a graphrec_dist checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(DataError, match="not found"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")


def test_resume_path_modes(tmp_path: Path) -> None:
    assert ckpt.resume_path(tmp_path, "auto") is None
    (tmp_path / "last.pt").write_bytes(b"x")
    assert ckpt.resume_path(tmp_path, "auto") == tmp_path / "last.pt"
    assert ckpt.resume_path(tmp_path, "never") is None
    with pytest.raises(UserError, match="train.resume=nope.pt"):
        ckpt.resume_path(tmp_path, "nope.pt")


def test_rng_state_round_trip() -> None:
    state = ckpt.rng_state()
    first = (torch.rand(2), np.random.rand(), random.random())
    ckpt.set_rng_state(state)
    second = (torch.rand(2), np.random.rand(), random.random())
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]


def test_load_run_rebuilds_the_trained_model_with_overrides(tmp_path: Path) -> None:
    bundle_dir = save_bundle(toy_bundle(), tmp_path / "bundle")
    cfg = load_config(None, [f"data.bundle_dir={bundle_dir}", "model.emb_dim=8", "model.hidden_dim=8"])
    torch.manual_seed(3)
    model = build_model(cfg, toy_bundle())
    run = tmp_path / "run"
    ckpt.save_checkpoint(run / ckpt.BEST, {"model": model.state_dict(), "config": cfg.to_dict()})
    cfg2, model2, bundle2 = ckpt.load_run(run, ["eval.ks=[5]"])
    assert cfg2.eval.ks == [5] and cfg2.model.emb_dim == 8
    users = torch.arange(4)
    expected = model.scorer(bundle2, DistContext(), cfg2.eval).scores(users)
    assert torch.allclose(model2.scorer(bundle2, DistContext(), cfg2.eval).scores(users), expected)
    with pytest.raises(DataError, match="holds no best.pt"):
        ckpt.load_run(tmp_path / "bundle")
