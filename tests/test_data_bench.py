"""The data benchmark reports seconds and peak RSS of each step at a (tiny) scale."""
from __future__ import annotations

import pytest

from graphrec_dist.benchmarks.data_build import bench_build


@pytest.mark.slow
def test_bench_build_small(tmp_path) -> None:
    result = bench_build(users=100, work_dir=tmp_path, seed=1)
    for step in ("synth", "build", "load"):
        assert result[step]["seconds"] > 0
        assert 50 < result[step]["peak_rss_mb"] < 4096
    assert result["build"]["counts"]["num_nodes"]["user"] == 100
    assert (tmp_path / "bundle-100" / "meta.json").is_file()
