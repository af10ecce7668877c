"""The generated data has learnable structure, and its side relations carry signal of their own."""
from __future__ import annotations

from graphrec_dist.config import DataConfig
from graphrec_dist.data.prepare import prepare_bundle
from graphrec_dist.data.signal_check import signal_check


def test_generated_data_has_signal(tmp_path) -> None:
    cfg = DataConfig(raw_dir=str(tmp_path / "raw"), bundle_dir=str(tmp_path / "b"), synth_users=600)
    result = signal_check(prepare_bundle(cfg), k=20)
    pop = result["popularity"]["recall@20"]
    assert result["puresvd_interactions"]["recall@20"] > 2 * pop
    assert result["content_x_popularity"]["recall@20"] > 1.5 * pop
    assert result["users"] == 600
