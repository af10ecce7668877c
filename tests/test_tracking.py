"""run.tensorboard: rank 0's event files hold the per-step loss and the per-epoch figures of
metrics.jsonl, read back with TensorBoard's own reader; a resumed run's series have each step once."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from graphrec_dist.cli import main as cli_main
from graphrec_dist.tracking import TB_DIR, epoch_scalars
from graphrec_dist.train import main

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="the tensorboard extra is not installed")


@pytest.fixture(scope="module")
def data_overrides(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("tracking_data")
    return [f"data.raw_dir={root}/raw", f"data.bundle_dir={root}/bundle", "data.synth_users=120"]


def tiny(data: list[str], out: Path, *extra: str) -> list[str]:
    return ["configs/debug.yaml", *data, f"run.out_dir={out}", "run.tensorboard=true", "train.edges_per_epoch=768",
            "train.epochs=3", "train.lr=0.01", "eval.ks=[10]", *extra]


def read_events(out: Path) -> dict[str, list[tuple[int, float]]]:
    """Tag -> [(step, value)] as TensorBoard shows them (purged steps of a restart dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / TB_DIR), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@needs_tensorboard
def test_event_file_holds_the_loss_and_validation_series(data_overrides, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = main(tiny(data_overrides, out))
    events, history = read_events(out), rows(out)
    assert [step for step, _ in events["train/loss"]] == list(range(1, result.global_step + 1)) == \
        [step for step, _ in events["train/lr"]]
    assert all(value > 0 for _, value in events["train/loss"])
    # Every epoch's figures at the step where the epoch ended (float32 in the event file).
    assert events["val/ndcg@10"] == [(r["step"], pytest.approx(r["val_ndcg@10"], rel=1e-6)) for r in history]
    assert events["epoch/loss"] == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in history]
    assert [s for s, _ in events["epoch/epoch_time_s"]] == [r["step"] for r in history]
    assert "epoch/lr" in events and not any(tag.startswith("dist/") for tag in events)


@needs_tensorboard
def test_a_resumed_run_has_each_step_once_and_sharded_runs_log_their_traffic(data_overrides, tmp_path: Path) -> None:
    out = tmp_path / "run"
    sharded = ["dist.sharding=users", "train.mode=full_graph", "train.loss=softmax", "train.checkpoint_every=2"]
    with pytest.raises(RuntimeError, match="simulated failure"):
        main(tiny(data_overrides, out, *sharded, "debug.fail_after_step=5"))
    result = main(tiny(data_overrides, out, *sharded))  # train.resume=auto: from step 4
    events = read_events(out)
    # Step 5 was logged by the first attempt and again after the resume: shown once.
    assert [step for step, _ in events["train/loss"]] == list(range(1, result.global_step + 1))
    assert [s for s, _ in events["val/ndcg@10"]] == [r["step"] for r in rows(out)]
    assert {"dist/peak_rss_mib", "dist/allreduce_s_per_step", "dist/allreduce_mb_per_step"} <= set(events)


def test_only_numbers_become_series() -> None:
    row = {"epoch": 1, "step": 8, "loss": 0.5, "val_ndcg@10": 0.1, "edges_per_s": None, "best_epoch": 1,
           "peak_rss_mib": 300.0, "lr": 0.01}
    assert epoch_scalars(row) == {"epoch/loss": 0.5, "val/ndcg@10": 0.1, "dist/peak_rss_mib": 300.0, "epoch/lr": 0.01}


def test_without_the_package_the_run_stops_with_exit_2(data_overrides, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    assert cli_main(["train", *tiny(data_overrides, tmp_path / "run")]) == 2
    assert "pip install -e '.[tensorboard]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
