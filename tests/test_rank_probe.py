"""EASE truncated to rank k (benchmarks/experiments/rank_probe.py, a probe outside the package)."""
from __future__ import annotations

import pytest
import torch
from rank_probe import main, markdown, rank_k_scorer, rank_probe  # benchmarks/experiments (conftest.py)

from graphrec_dist.benchmarks.evaluation import synthetic_bundle
from graphrec_dist.config import EvalConfig
from graphrec_dist.distributed import DistContext
from graphrec_dist.evaluate import evaluate_scorer
from graphrec_dist.models.ease import Ease, interaction_matrix


def test_full_rank_is_ease_and_low_rank_differs():
    bundle = synthetic_bundle(80, 40, per_user=12)
    rows = rank_probe(bundle, [1, 8, 500], lam=5.0, popularity_groups=2)
    assert [r["rank"] for r in rows] == [1, 8, 40]  # clipped to the 40 items; full rank always last
    ease = Ease(5.0)
    ease.fit(bundle, DistContext())
    exact = evaluate_scorer(ease.scorer(bundle, DistContext()), bundle, "val", EvalConfig(), DistContext())
    assert rows[-1]["energy"] == pytest.approx(1.0)
    for key in ("ndcg@10", "hit@10", "mrr"):
        assert rows[-1][key] == pytest.approx(exact[key], abs=1e-6), key
    assert rows[0]["energy"] < rows[1]["energy"] < 1.0
    assert rows[0]["mrr"] != pytest.approx(exact["mrr"])
    table = markdown(rows).splitlines()
    assert len(table) == 2 + 3 and table[0].count("NDCG@10") == 1 + len(rows[0]["by_popularity"])


def test_rank_k_scores_are_eases_at_full_rank():
    bundle = synthetic_bundle(50, 30, per_user=8)
    ease = Ease(5.0)
    ease.fit(bundle, DistContext())
    u, s, vt = torch.linalg.svd(ease.weights.double())
    x = interaction_matrix(bundle)
    xu = torch.from_numpy(x @ u.numpy())
    users = torch.arange(50)
    exact = ease.scorer(bundle, DistContext()).scores(users)
    assert torch.allclose(rank_k_scorer(xu, s, vt, 30).scores(users), exact.float(), atol=1e-4)
    assert not torch.allclose(rank_k_scorer(xu, s, vt, 3).scores(users), exact.float(), atol=1e-4)


def test_bad_input_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main([str(tmp_path), "--ranks", "0,64"]) == 2
    assert "--ranks" in capsys.readouterr().err
