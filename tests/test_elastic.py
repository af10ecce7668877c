"""Resuming on another number of ranks (graphrec_dist.elastic), in one process: the data check of a
re-cut is the same for any W, and a replicated checkpoint of another W says before training what
changes. The sharded re-cut itself runs under torchrun in tests/test_sharding.py (2 -> 1 and 3)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_sampling import toy_bundle

from graphrec_dist import elastic
from graphrec_dist.data.partition import shard_bundle
from graphrec_dist.errors import ConfigError
from graphrec_dist.train import main


def test_the_data_hash_of_a_shard_is_the_same_for_any_rank_and_world_size() -> None:
    bundle = toy_bundle(num_users=13)
    hashes = {elastic.data_hash(shard_bundle(bundle, r, w)) for w in (1, 2, 3) for r in range(w)}
    assert len(hashes) == 1
    other = shard_bundle(toy_bundle(num_users=13, seed=1), 0, 2)  # other training pairs
    assert elastic.data_hash(other) not in hashes
    with pytest.raises(ConfigError, match="trained on other data"):
        elastic.check_data(Path("last.pt"), {"sharding": {"data_hash": hashes.pop()}}, other, "start over")


def test_rank_streams_and_partial_losses_are_dealt_out_to_the_new_ranks() -> None:
    same = {"torch": torch.get_rng_state(), "numpy": None, "python": None}
    state = {"world_size": 2, "rng": [same, dict(same)], "loss_sums": [(1.5, 3), (2.5, 5)], "trainer": {}}
    out, exact = elastic.recut_state(state, 3)
    assert exact and out["world_size"] == 3 and len(out["rng"]) == 3
    assert out["loss_sums"] == [(4.0, 8), (0.0, 0), (0.0, 0)]  # the epoch's loss stays the sum over all
    drifted = dict(same, torch=torch.zeros_like(same["torch"]))
    assert not elastic.recut_state(dict(state, rng=[same, drifted]), 1)[1]


def test_a_replicated_checkpoint_of_another_world_size_warns_before_training(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    args = ["configs/debug.yaml", f"data.raw_dir={root}/raw", f"data.bundle_dir={root}/bundle", "data.synth_users=120",
            f"run.out_dir={tmp_path / 'run'}", "train.edges_per_epoch=1024", "train.batch_size=128",
            "train.checkpoint_every=3", "eval.ks=[10]", "train.lr_schedule=cosine"]
    with pytest.raises(RuntimeError, match="simulated failure"):
        main([*args, "debug.fail_after_step=4"])  # its last checkpoint: step 3 of epoch 0
    last = tmp_path / "run" / "last.pt"
    state = torch.load(last, weights_only=False)  # as if 2 DDP ranks had saved it mid-epoch
    state.update(world_size=2, rng=state["rng"] * 2, loss_sums=state["loss_sums"] * 2)
    torch.save(state, last)
    capsys.readouterr()
    result = main(args)
    err = capsys.readouterr().err
    warned = err.index("(replicated, saved on 2 ranks) on 1 ranks is not exact")
    assert warned < err.index("resumed from") < err.index("epoch 0:")
    assert "8 steps an epoch instead of 4" in err and "the cosine schedule keeps its saved length" in err
    assert "step 3 of 8" in err and result.global_step == 16
