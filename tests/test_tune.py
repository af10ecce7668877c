"""graphrec-dist tune: every grid point trained on the same data, the best validation NDCG@10 chosen,
test computed once for the chosen settings only; bad grids exit 2; and, on a real MovieLens 100K
split, the harness's tuned EASE equals an EASE tuned independently with numpy over the same grid."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from graphrec_dist.benchmarks.common import BenchError
from graphrec_dist.benchmarks.tuning import chosen_text, tuned_overrides
from graphrec_dist.cli import main as cli_main
from graphrec_dist.config import DataConfig, load_config, parse_grid
from graphrec_dist.data.prepare import build_bundle
from graphrec_dist.data.store import load_bundle
from graphrec_dist.tune import grid_points, main as tune_main

ROOT = Path(__file__).resolve().parents[1]
MOVIELENS = ROOT.parent / "shared" / "data" / "movielens-100k"


def _debug(tmp_path: Path) -> list[str]:
    return ["configs/debug.yaml", f"data.raw_dir={tmp_path / 'raw'}", f"data.bundle_dir={tmp_path / 'bundle'}"]


def test_grid_points_vary_the_first_key_slowest_and_yaml_values_parse() -> None:
    grid = parse_grid(["model.ease_lambda=1,10", "model.exclude_relations=[tag],[]"])
    assert grid_points(grid) == [{"model.ease_lambda": 1, "model.exclude_relations": ["tag"]},
                                 {"model.ease_lambda": 1, "model.exclude_relations": []},
                                 {"model.ease_lambda": 10, "model.exclude_relations": ["tag"]},
                                 {"model.ease_lambda": 10, "model.exclude_relations": []}]


def test_tune_chooses_the_best_validation_point_and_tests_only_the_chosen_one(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "tune"
    args = [*_debug(tmp_path), "model.name=ease", "--grid", "model.ease_lambda=0.5,50,5000", "--out", str(out)]
    record = tune_main(args + ["--final"])
    vals = [p["val"] for p in record["points"]]
    assert len(vals) == 3 and len(set(vals)) == 3  # lambda matters on this data
    best = int(np.argmax(vals))
    assert record["chosen"] == {"model.ease_lambda": [0.5, 50, 5000][best]}
    assert record["chosen_overrides"] == [f"model.ease_lambda={[0.5, 50, 5000][best]}"]
    assert all("test" not in json.dumps(p["val_metrics"]) for p in record["points"])
    final = json.loads((out / "final" / "test_metrics.json").read_text())
    assert final["ndcg@10"] == record["final"]["test"]["ndcg@10"]
    saved = json.loads((out / "tune.json").read_text())
    assert saved["chosen"] == record["chosen"] and saved["best_val"] == max(vals)
    # A rerun into the same folder takes the finished points from tune.json instead of refitting them.
    again = tune_main(args)
    assert [p["seconds"] for p in again["points"]] == [p["seconds"] for p in record["points"]]


def test_a_trained_grid_point_is_never_tested(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "tune"
    # overrides may also stand after the options
    record = tune_main([*_debug(tmp_path), "--grid", "train.lr=0.01,0.001", "--out", str(out), "model.name=mf",
                        "train.max_steps=2"])
    assert len(record["points"]) == 2 and all(p["val"] is not None for p in record["points"])
    for i in range(2):
        point = out / "points" / f"{i:02d}"
        assert (point / "best.pt").is_file() and not (point / "test_metrics.json").exists()
    assert "final" not in record and not (out / "final").exists()


@pytest.mark.parametrize("grid, message", [
    ("model.no_such_option=1,2", "model.no_such_option"),
    ("model.ease_lambda=", "expected section.key=value1,value2"),
    ("model.ease_lambda=-1,10", "model.ease_lambda"),  # a value the schema refuses, before anything trains
    ("run.out_dir=a,b", "not an option that can be tuned"),
])
def test_a_bad_grid_exits_2_naming_it(tmp_path, monkeypatch, capsys, grid, message) -> None:
    monkeypatch.chdir(ROOT)
    code = cli_main(["tune", *_debug(tmp_path), "model.name=ease", "--grid", grid, "--out", str(tmp_path / "t")])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "t" / "tune.json").exists()


def test_a_preset_without_a_grid_has_nothing_to_tune(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(ROOT)
    assert cli_main(["tune", *_debug(tmp_path), "model.name=ease", "--out", str(tmp_path / "t")]) == 2
    assert "nothing to tune" in capsys.readouterr().err


def test_every_baseline_preset_declares_a_grid_that_reads() -> None:
    for preset in sorted((ROOT / "configs" / "baselines").glob("*.yaml")):
        cfg = load_config(preset)
        if cfg.model.name in ("popularity", "content_knn"):  # nothing to tune
            assert not cfg.tune.grid
        else:
            assert parse_grid(cfg.tune.grid), f"{preset.name} declares no tune.grid"


class _Plan:
    out_dir = Path("unused")
    train_overrides: list[str] = []
    invocation, reuse = "test", False


def test_the_bench_refuses_a_baseline_without_a_grid(tmp_path) -> None:
    preset = tmp_path / "mf.yaml"
    preset.write_text("model:\n  name: mf\n")
    with pytest.raises(BenchError, match="declares no tune.grid"):
        tuned_overrides(_Plan(), "mf", str(preset), [], lambda s: [], 0, 0, "real")
    assert tuned_overrides(_Plan(), "popularity", str(preset), ["model.name=popularity"], lambda s: [], 0, 0,
                           "real") == ([], {"grid": {}, "why": "nothing to tune"})


def test_chosen_text_shows_one_value_where_every_split_agrees() -> None:
    grid = {"model.ease_lambda": [3, 30], "model.ease_dropout": [0, 0.5]}
    tunings = [{"grid": grid, "chosen": {"model.ease_lambda": lam, "model.ease_dropout": 0}} for lam in (30, 30, 3)]
    assert chosen_text(tunings) == "ease_lambda 30/30/3, ease_dropout 0"


def _ndcg10_by_numpy(scores: np.ndarray, x: np.ndarray, rows: np.ndarray) -> float:
    """Leave-one-out NDCG@10, training items masked, ties counted against the model."""
    users, items = rows[:, 0], rows[:, 1]
    s = scores[users].copy()
    target = s[np.arange(len(users)), items].copy()
    s[x[users] > 0] = -np.inf
    s[np.arange(len(users)), items] = -np.inf
    rank = (s >= target[:, None]).sum(1)
    return float(np.mean(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0)))


@pytest.mark.slow
@pytest.mark.skipif(not (MOVIELENS / "ratings.csv").is_file(), reason="real MovieLens 100K not present")
def test_harness_tuned_ease_equals_an_independent_numpy_ease_on_real_movielens(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    data = DataConfig(source="csv", csv_spec="configs/data/movielens-100k.yaml")
    data.split.seed = 3
    path, _ = build_bundle(data, MOVIELENS, tmp_path / "bundle")
    preset = "configs/baselines/ease.yaml"
    record = tune_main([preset, "data.source=csv", "data.csv_spec=configs/data/movielens-100k.yaml",
                        f"data.raw_dir={MOVIELENS}", f"data.bundle_dir={path}", "data.split.seed=3",
                        "--out", str(tmp_path / "tune"), "--final"])
    bundle = load_bundle(path)
    x = np.zeros((bundle.num_users, bundle.num_books))
    x[bundle.train[:, 0].numpy(), bundle.train[:, 1].numpy()] = 1.0
    g = x.T @ x
    grid = parse_grid(load_config(preset).tune.grid)
    best = (-1.0, None)
    for lam in grid["model.ease_lambda"]:
        for p in grid["model.ease_dropout"]:
            inv = np.linalg.inv(g + lam * np.eye(len(g)) + p / (1 - p) * np.diag(np.diag(g)))
            b = -inv / np.diag(inv)[None, :]
            np.fill_diagonal(b, 0.0)
            val = _ndcg10_by_numpy(x @ b, x, bundle.val.numpy())
            if val > best[0]:
                best = (val, b)
    independent_test = _ndcg10_by_numpy(x @ best[1], x, bundle.test.numpy())
    assert abs(record["best_val"] - best[0]) < 1e-4
    assert abs(record["final"]["test"]["ndcg@10"] - independent_test) < 0.002
