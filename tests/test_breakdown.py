"""The breakdown of ranking metrics by the held-out item's training popularity."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_evaluate import HAND_SCORES, MatrixScorer, _exit_2_naming, _fake_checkpoint, hand_bundle

from graphrec_dist import evaluate
from graphrec_dist.breakdown import popularity_groups
from graphrec_dist.config import EvalConfig
from graphrec_dist.distributed import DistContext


def test_groups_are_about_equal_and_ties_share_a_group():
    counts = np.array([1, 1, 2, 3, 5, 8, 8, 8, 13, 21])
    group, bounds = popularity_groups(counts, 5)
    assert sorted(set(group.tolist())) == list(range(len(bounds)))
    for c in np.unique(counts):  # one count never spans two groups
        assert len(set(group[counts == c].tolist())) == 1
    assert (bounds[1:, 0] > bounds[:-1, 1]).all()  # ascending, non-overlapping
    assert bounds[0, 0] == 1 and bounds[-1, 1] == 21
    assert max(np.bincount(group)) <= 4
    # Counts that all tie make one group, whatever was asked for.
    group, bounds = popularity_groups(np.full(6, 7), 3)
    assert group.tolist() == [0] * 6 and bounds.tolist() == [[7, 7]]
    with pytest.raises(ValueError, match="num_groups"):
        popularity_groups(counts, 0)


def test_hand_example_by_popularity():
    # test items 3, 5, 4 (training counts 0, 1, 0) at ranks 2, 3, 0 (test_evaluate's hand example).
    res = evaluate.evaluate_scorer(MatrixScorer(HAND_SCORES), hand_bundle(), "test", EvalConfig(ks=[1, 3]),
                                   DistContext(), popularity_groups=2)
    low, high = res["by_popularity"]
    assert low["train_count"] == [0, 0] and low["rows"] == 2
    assert low["ndcg@3"] == pytest.approx((1 / math.log2(4) + 1.0) / 2) and low["hit@1"] == 0.5
    assert high["train_count"] == [1, 1] and high["rows"] == 1
    assert high["ndcg@3"] == 0.0 and high["mrr"] == pytest.approx(1 / 4)
    # The groups' row-weighted means are the overall metrics.
    assert (low["rows"] * low["ndcg@3"] + high["rows"] * high["ndcg@3"]) / 3 == pytest.approx(res["ndcg@3"])


def test_cli_by_popularity_and_its_errors(tmp_path, monkeypatch, capsys):
    _fake_checkpoint(monkeypatch, [])
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"")
    evaluate.main(["--checkpoint", str(ckpt), "--split", "test", "--by-popularity", "2"])
    printed = json.loads(capsys.readouterr().out)
    assert [g["rows"] for g in printed["by_popularity"]] == [2, 1]
    _exit_2_naming(["--checkpoint", str(ckpt), "--by-popularity", "-1"], capsys, "--by-popularity", "-1")
    _exit_2_naming(["--checkpoint", str(ckpt), "--by-popularity", "2", "eval.protocol=sampled"], capsys,
                   "popularity", "sampled")
