import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import HeteroData

from graphrec_dist import checkpoint, evaluate, run_dir
from graphrec_dist.config import EvalConfig, load_config
from graphrec_dist.data.bundle import Bundle
from graphrec_dist.distributed import DistContext
from graphrec_dist.errors import ConfigError, DataError
from graphrec_dist.models.base import EmbeddingScorer

CTX = DistContext()


class MatrixScorer:
    """A scorer that returns rows of a fixed score matrix."""

    def __init__(self, matrix: torch.Tensor):
        self.matrix = matrix
        self.num_items = matrix.shape[1]

    def scores(self, users: torch.Tensor) -> torch.Tensor:
        return self.matrix[users]


def make_bundle(train, val, test, num_users: int, num_books: int) -> Bundle:
    train, val, test = (torch.as_tensor(x, dtype=torch.int64).reshape(-1, 2) for x in (train, val, test))
    graph = HeteroData()
    graph["user"].num_nodes = num_users
    graph["book"].num_nodes = num_books
    graph["user", "rates", "book"].edge_index = train.T.contiguous()
    books = pd.DataFrame({"book_id": np.arange(num_books) + 100, "title": "t", "authors": "a"})
    users = pd.DataFrame({"user_id": np.arange(num_users) + 1000})
    return Bundle(graph, train, val, test, books, users)


def random_bundle(seed: int, num_users: int = 40, num_books: int = 30, per_user: int = 6) -> Bundle:
    """Leave-one-out splits over random histories (users ascending in val/test)."""
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for u in range(num_users):
        items = rng.choice(num_books, size=per_user, replace=False)
        train += [(u, b) for b in items[:-2]]
        if u % 7 != 3:  # some users have no held-out item (train-only)
            val.append((u, items[-2]))
            test.append((u, items[-1]))
    return make_bundle(train, val, test, num_users, num_books)


# Hand example: 3 users, 6 books.
HAND_SCORES = torch.tensor([
    [5.0, 4.0, 3.0, 3.0, 1.0, 0.0],  # user 0: train {0}, val 2, test 3 (tie with item 2)
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],  # user 1: constant; train {0, 1}, val 4, test 5
    [0.0, 1.0, 2.0, 3.0, 4.0, 9.0],  # user 2: train {5} (the top score, masked), val 0, test 4
])


def hand_bundle() -> Bundle:
    return make_bundle([[0, 0], [1, 0], [1, 1], [2, 5]], [[0, 2], [1, 4], [2, 0]],
                       [[0, 3], [1, 5], [2, 4]], 3, 6)


def test_hand_example_full_protocol_ranks_ties_and_masks(tmp_path):
    out = tmp_path / "per_user.csv"
    res = evaluate.evaluate_scorer(MatrixScorer(HAND_SCORES), hand_bundle(), "test", EvalConfig(ks=[1, 3]), CTX, out)
    # test ranks: user 0 -> 2 (item 1 higher, item 2 tied; item 0 masked), user 1 -> 3 (four unmasked
    # items, all tied), user 2 -> 0 (only the masked item 5 scores higher).
    assert pd.read_csv(out)["rank"].tolist() == [2, 3, 0]
    assert res["num_users"] == 3.0
    assert res["hit@1"] == pytest.approx(1 / 3) and res["recall@1"] == res["hit@1"]
    assert res["hit@3"] == pytest.approx(2 / 3) and res["recall@3"] == res["hit@3"]
    assert res["ndcg@1"] == pytest.approx(1 / 3)
    assert res["ndcg@3"] == pytest.approx((1 / math.log2(4) + 1.0) / 3)
    assert res["mrr"] == pytest.approx((1 / 3 + 1 / 4 + 1) / 3)


def test_hand_example_exclude_other_holdout_and_val_split(tmp_path):
    out = tmp_path / "per_user.csv"
    cfg = EvalConfig(ks=[1, 3], exclude_other_holdout=True)
    evaluate.evaluate_scorer(MatrixScorer(HAND_SCORES), hand_bundle(), "test", cfg, CTX, out)
    assert pd.read_csv(out)["rank"].tolist() == [1, 2, 0]  # the val item no longer counts
    evaluate.evaluate_scorer(MatrixScorer(HAND_SCORES), hand_bundle(), "val", EvalConfig(ks=[1]), CTX, out)
    frame = pd.read_csv(out)
    assert frame["rank"].tolist() == [2, 3, 4]
    assert frame["user_id"].tolist() == [1000, 1001, 1002] and frame["book_id"].tolist() == [102, 104, 100]
    evaluate.evaluate_scorer(MatrixScorer(HAND_SCORES), hand_bundle(), "val", cfg, CTX, out)
    assert pd.read_csv(out)["rank"].tolist() == [1, 2, 3]


def test_full_ranks_never_modifies_scores_and_counts_nan_against_the_model():
    scores = torch.tensor([[float("nan"), 2.0, 1.0, 5.0], [1.0, float("nan"), 3.0, 0.0]])
    before = scores.clone()
    ranks = evaluate.full_ranks(scores, np.array([0, 1]), np.array([1, 1]),
                                np.array([0, 1]), np.array([3, 2]))
    # row 0: item 3 masked, the NaN item 0 counts against; row 1: NaN target is worst of {0, 3}.
    assert ranks.tolist() == [1, 2]
    assert torch.equal(torch.isnan(scores), torch.isnan(before))
    assert torch.equal(scores.nan_to_num(-1), before.nan_to_num(-1))


def test_hand_example_sampled_protocol(tmp_path):
    out = tmp_path / "per_user.csv"
    cfg = EvalConfig(ks=[1, 3], protocol="sampled", sampled_candidates=[3, 50])
    res = evaluate.evaluate_scorer(MatrixScorer(HAND_SCORES), hand_bundle(), "test", cfg, CTX, out)
    frame = pd.read_csv(out)
    for c in (3, 50):
        ranks = frame[f"rank_C={c}"].tolist()
        assert ranks[1] == c - 1  # constant scores: every negative ties, counted against
        assert ranks[2] == 0  # the only higher item is a training item, never drawn
        assert 0 <= ranks[0] <= c - 1
        assert res[f"num_users/C={c}"] == 3.0
        assert res[f"hit@1/C={c}"] == pytest.approx(sum(r < 1 for r in ranks) / 3)
        assert res[f"mrr/C={c}"] == pytest.approx(sum(1 / (r + 1) for r in ranks) / 3)
    # With 49 draws from {1, 2, 4, 5} user 0 surely hits items 1 (higher) or 2 (tie).
    assert frame["rank_C=50"][0] > 0
    assert set(res) == {f"{m}/C={c}" for c in (3, 50) for m in
                        ["hit@1", "ndcg@1", "recall@1", "hit@3", "ndcg@3", "recall@3", "mrr", "num_users"]}


def test_sampled_ranks_by_hand_with_ties_and_duplicates():
    scores = torch.tensor([[3.0, 1.0, 3.0, 4.0, 0.0]])
    ranks = evaluate.sampled_ranks(scores, np.array([0]), np.array([0]), np.array([[1, 2, 2, 4, 3]]))
    assert ranks.tolist() == [3]  # item 2 twice (a tie, drawn twice) and item 3 (higher)


def test_draw_negatives_exclude_masked_and_target_and_are_uniform():
    rng = np.random.default_rng(0)
    neg, ok = evaluate.draw_negatives(10, np.array([3, 0]), np.array([0, 0, 1]), np.array([1, 7, 9]),
                                      20000, rng)
    assert ok.tolist() == [True, True]
    assert set(np.unique(neg[0])) == {0, 2, 4, 5, 6, 8, 9}
    assert set(np.unique(neg[1])) == set(range(1, 9))
    freq = np.bincount(neg[0], minlength=10)[[0, 2, 4, 5, 6, 8, 9]] / 20000
    assert np.all(np.abs(freq - 1 / 7) < 0.02)
    _, ok = evaluate.draw_negatives(2, np.array([0]), np.array([0]), np.array([1]), 5, rng)
    assert ok.tolist() == [False]


def straightforward(user_emb, item_emb, bundle, split, ks, exclude_other=False):
    """The definition, one user and one item at a time, in plain Python."""
    train = {}
    for u, b in bundle.train.tolist():
        train.setdefault(u, set()).add(b)
    other = dict(bundle.split("test" if split == "val" else "val").tolist())
    totals, n = {}, 0
    for u, target in bundle.split(split).tolist():
        s = (user_emb[u] @ item_emb.T).tolist()
        masked = train.get(u, set()) | ({other[u]} if exclude_other and u in other else set())
        rank = sum(1 for j in range(len(s)) if j != target and j not in masked and s[j] >= s[target])
        vals = {"mrr": 1 / (rank + 1)}
        for k in ks:
            vals[f"hit@{k}"] = vals[f"recall@{k}"] = float(rank < k)
            vals[f"ndcg@{k}"] = 1 / math.log2(rank + 2) if rank < k else 0.0
        for key, v in vals.items():
            totals[key] = totals.get(key, 0.0) + v
        n += 1
    return {key: v / n for key, v in totals.items()}


@pytest.mark.parametrize("integer_embeddings,exclude_other", [(False, False), (True, False), (True, True)])
def test_known_embeddings_match_straightforward_computation(integer_embeddings, exclude_other):
    gen = torch.Generator().manual_seed(1)
    bundle = random_bundle(5)
    if integer_embeddings:  # small integers: many exact ties
        user_emb = torch.randint(-1, 2, (40, 3), generator=gen).float()
        item_emb = torch.randint(-1, 2, (30, 3), generator=gen).float()
    else:
        user_emb, item_emb = torch.randn(40, 8, generator=gen), torch.randn(30, 8, generator=gen)
    cfg = EvalConfig(ks=[1, 5, 10], user_chunk=7, exclude_other_holdout=exclude_other)
    for split in ("val", "test"):
        got = evaluate.evaluate_scorer(EmbeddingScorer(user_emb, item_emb), bundle, split, cfg, CTX)
        want = straightforward(user_emb, item_emb, bundle, split, [1, 5, 10], exclude_other)
        assert got["num_users"] == len(bundle.split(split))
        for key, value in want.items():
            assert got[key] == pytest.approx(value, abs=1e-9), key


def test_constant_model_scores_about_zero_and_perfect_model_one():
    bundle = random_bundle(2)
    cfg = EvalConfig(ks=[10, 20])
    const = evaluate.evaluate_scorer(MatrixScorer(torch.zeros(40, 30)), bundle, "test", cfg, CTX)
    assert const["hit@10"] == 0.0 and const["ndcg@10"] == 0.0 and const["mrr"] < 0.05
    perfect = torch.zeros(40, 30)
    perfect[bundle.test[:, 0], bundle.test[:, 1]] = 1.0
    best = evaluate.evaluate_scorer(MatrixScorer(perfect), bundle, "test", cfg, CTX)
    assert best["hit@10"] == 1.0 and best["ndcg@10"] == 1.0 and best["mrr"] == 1.0


def test_bad_split_or_book_count_is_a_user_error():
    with pytest.raises(ConfigError, match="train"):
        evaluate.evaluate_scorer(MatrixScorer(HAND_SCORES), hand_bundle(), "train", EvalConfig(), CTX)
    with pytest.raises(DataError, match="scores 5 books .* has 6"):
        evaluate.evaluate_scorer(MatrixScorer(HAND_SCORES[:, :5]), hand_bundle(), "test", EvalConfig(), CTX)


def _hand_cold_bundle() -> Bundle:
    """Hand example with items 3, 4, 5 cold: user 0 holds out 3 and 5 (test), user 2 holds out 4
    (test) and 5 (val); user 1 holds out 3 (val)."""
    bundle = make_bundle([[0, 0], [1, 0], [1, 1], [2, 1]], [[0, 2]], [[0, 1]], 3, 6)
    bundle.cold = {"cold_items": torch.tensor([3, 4, 5]), "cold_test": torch.tensor([[0, 3], [0, 5], [2, 4]]),
                   "cold_val": torch.tensor([[1, 3], [2, 5]])}
    return bundle


def test_hand_example_cold_items_rank_among_cold_items_only(tmp_path):
    # User 0: cold scores 3, 1, 0 -> item 3 rank 0, item 5 rank 2 (warm items 0-2 score higher but
    # are not candidates). User 2: 3, 4, 9 -> item 4 rank 1, or 0 with the val item 5 masked.
    bundle = _hand_cold_bundle()
    res = evaluate.evaluate_scorer(MatrixScorer(HAND_SCORES), bundle, "cold_test", EvalConfig(ks=[1, 3]), CTX,
                                   tmp_path / "cold.csv")
    assert res["num_users"] == 2.0
    assert res["recall@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert res["ndcg@1"] == pytest.approx((1 + 0) / 2)
    ideal2 = 1 + 1 / math.log2(3)
    assert res["ndcg@3"] == pytest.approx(((1 + 1 / math.log2(4)) / ideal2 + 1 / math.log2(3)) / 2)
    assert res["mrr"] == pytest.approx((1 + 1 / 2) / 2)
    per_user = pd.read_csv(tmp_path / "cold.csv")
    assert per_user[["user", "book", "rank"]].values.tolist() == [[0, 3, 0], [0, 5, 2], [2, 4, 1]]
    masked = evaluate.evaluate_scorer(MatrixScorer(HAND_SCORES), bundle, "cold_test",
                                      EvalConfig(ks=[1], exclude_other_holdout=True), CTX)
    assert masked["ndcg@1"] == pytest.approx((1 + 1) / 2)


def test_inductive_split_errors_name_the_fix():
    with pytest.raises(ConfigError, match="data.split.cold_items"):
        evaluate.evaluate_scorer(MatrixScorer(HAND_SCORES), hand_bundle(), "cold_test", EvalConfig(), CTX)
    with pytest.raises(ConfigError, match="data.split.cold_users"):
        evaluate.evaluate_scorer(MatrixScorer(HAND_SCORES), hand_bundle(), "cold_user_val", EvalConfig(), CTX)
    with pytest.raises(ConfigError, match="protocol=full"):
        evaluate.evaluate_scorer(MatrixScorer(HAND_SCORES), _hand_cold_bundle(), "cold_test",
                                 EvalConfig(protocol="sampled"), CTX)


def test_empty_split_gives_zero_users():
    bundle = make_bundle([[0, 1]], np.zeros((0, 2)), np.zeros((0, 2)), 3, 6)
    res = evaluate.evaluate_scorer(MatrixScorer(HAND_SCORES), bundle, "test", EvalConfig(ks=[1]), CTX)
    assert res == {"hit@1": 0.0, "ndcg@1": 0.0, "recall@1": 0.0, "mrr": 0.0, "num_users": 0.0}


def _dist_worker(rank: int, world_size: int, out_dir: str) -> None:
    """One rank of a gloo group: evaluate both protocols, write the metrics as JSON.

    The ranks meet through a file store, not a TCP port: no port to choose, none to collide with
    another run on the machine. init_distributed then finds the group and reuses it.
    """
    import datetime

    import torch.distributed as dist

    from graphrec_dist.distributed import init_distributed

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size)})
    dist.init_process_group("gloo", init_method=f"file://{Path(out_dir) / f'rdzv_ws{world_size}'}", rank=rank,
                            world_size=world_size, timeout=datetime.timedelta(seconds=60))
    try:
        ctx = init_distributed(backend="gloo", device="cpu")
        assert (ctx.rank, ctx.world_size) == (rank, world_size)
        results = _both_protocols(ctx, Path(out_dir) / f"per_user_ws{world_size}.csv")
        (Path(out_dir) / f"ws{world_size}_rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def with_cold_items(bundle: Bundle, cold: np.ndarray, seed: int = 0) -> Bundle:
    """``bundle`` with every training row of the ``cold`` items moved to cold_val/cold_test."""
    train = bundle.train.numpy()
    on_cold = np.isin(train[:, 1], cold)
    rows = train[on_cold]
    to_test = np.random.default_rng(seed).random(len(rows)) < 0.6
    out = make_bundle(train[~on_cold], bundle.val, bundle.test, bundle.num_users, bundle.num_books)
    out.cold = {"cold_items": torch.as_tensor(np.sort(cold)), "cold_test": torch.as_tensor(rows[to_test]),
                "cold_val": torch.as_tensor(rows[~to_test])}
    return out


def _both_protocols(ctx: DistContext, per_user: Path) -> dict:
    evaluate.SAMPLED_BLOCK = 4  # several sampling blocks, so ranks share them out
    bundle = random_bundle(11, num_users=60, num_books=50)
    gen = torch.Generator().manual_seed(3)
    scorer = EmbeddingScorer(torch.randn(60, 8, generator=gen), torch.randn(50, 8, generator=gen))
    full = evaluate.evaluate_scorer(scorer, bundle, "test", EvalConfig(ks=[1, 5, 10], user_chunk=4), ctx, per_user)
    sampled_cfg = EvalConfig(ks=[1, 5], protocol="sampled", sampled_candidates=[5, 20], sampled_num_users=30)
    cold = with_cold_items(bundle, np.arange(35, 50))
    cold_cfg = EvalConfig(ks=[1, 5, 10], user_chunk=4, exclude_other_holdout=True)
    return {"full": full, "sampled": evaluate.evaluate_scorer(scorer, bundle, "val", sampled_cfg, ctx),
            "cold": evaluate.evaluate_scorer(scorer, cold, "cold_test", cold_cfg, ctx,
                                             per_user.with_name("cold_" + per_user.name))}


def _spawn(world_size: int, out_dir: Path, timeout_s: float = 120.0) -> None:
    """Run ``world_size`` ranks of :func:`_dist_worker`; past ``timeout_s``, kill them and fail."""
    import torch.multiprocessing as mp

    procs = mp.start_processes(_dist_worker, args=(world_size, str(out_dir)), nprocs=world_size,
                               join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    try:
        while not procs.join(timeout=1.0):  # raises if a rank failed, after stopping the others
            if time.monotonic() > deadline:
                pytest.fail(f"world size {world_size}: workers did not finish in {timeout_s:.0f} s")
    finally:
        for p in procs.processes:
            if p.is_alive():
                p.kill()
            p.join(timeout=10)  # reap it: a killed rank must not linger as a zombie


@pytest.mark.slow
@pytest.mark.multiproc
def test_world_sizes_1_2_3_give_bit_identical_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "SAMPLED_BLOCK", 4)
    single = _both_protocols(CTX, tmp_path / "per_user_ws1.csv")
    assert single["full"]["num_users"] == 51.0 and single["sampled"]["num_users/C=5"] == 30.0
    assert single["cold"]["num_users"] >= 20 and 0 < single["cold"]["ndcg@10"] < 1
    for world_size in (2, 3):
        _spawn(world_size, tmp_path)
        for rank in range(world_size):
            got = json.loads((tmp_path / f"ws{world_size}_rank{rank}.json").read_text())
            assert got == single, (world_size, rank)  # exact equality of every float
        for name in ("per_user", "cold_per_user"):
            assert (tmp_path / f"{name}_ws{world_size}.csv").read_text() == (tmp_path / f"{name}_ws1.csv").read_text()


class _HandModel(torch.nn.Module):
    def scorer(self, bundle, ctx):
        return MatrixScorer(HAND_SCORES)


def _fake_checkpoint(monkeypatch, calls: list) -> None:
    """Stand in for the run loader that ``evaluate`` uses, with the hand example."""

    def load_run(path, overrides):
        calls.append((Path(path), list(overrides)))
        return load_config(None, overrides), _HandModel(), hand_bundle()

    monkeypatch.setattr(evaluate, "load_run", load_run)


def test_cli_prints_json_and_exports_per_user(tmp_path, monkeypatch, capsys):
    calls = []
    _fake_checkpoint(monkeypatch, calls)
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"")
    result = evaluate.main(["--checkpoint", str(ckpt), "--split", "val", "eval.ks=[1]",
                            "eval.export_per_user=true"])
    printed = json.loads(capsys.readouterr().out)
    assert calls == [(ckpt, ["eval.ks=[1]", "eval.export_per_user=true"])]
    assert printed["split"] == "val" and printed["mrr"] == pytest.approx((1 / 3 + 1 / 4 + 1 / 5) / 3)
    assert printed["hit@1"] == result["hit@1"] == 0.0 and "hit@10" not in printed
    assert pd.read_csv(tmp_path / "per_user_val.csv")["rank"].tolist() == [2, 3, 4]


def _exit_2_naming(argv: list[str], capsys, *names: str) -> str:
    """Run ``graphrec-dist evaluate ARGV``: exit 2, one error line naming each of ``names``."""
    from graphrec_dist import cli

    assert cli.main(["evaluate", *argv]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and len(err.splitlines()) == 1, captured
    assert err.startswith("graphrec-dist evaluate: error: "), err
    for name in names:
        assert name in err, (name, err)
    return err


def test_cli_user_errors_exit_2(tmp_path, capsys):
    # The real load_run on what a user may pass: nothing there, a run folder without
    # checkpoints, a truncated checkpoint, a bad override of a readable one.
    missing = tmp_path / "missing"
    _exit_2_naming(["--run", str(missing)], capsys, str(missing), "not found")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    _exit_2_naming(["--run", str(empty)], capsys, str(empty), "best.pt", "last.pt")
    run = tmp_path / "run"
    cfg = load_config(None, [f"data.bundle_dir={tmp_path / 'no_bundle'}"])
    checkpoint.save_checkpoint(run / run_dir.BEST, {"model": {"w": torch.zeros(1000)}, "config": cfg.to_dict()})
    whole = (run / run_dir.BEST).read_bytes()
    _exit_2_naming(["--run", str(run), "eval.protocol=bogus"], capsys, "eval.protocol", "bogus")
    (run / run_dir.BEST).write_bytes(whole[:len(whole) // 2])
    _exit_2_naming(["--checkpoint", str(run / run_dir.BEST)], capsys, str(run / run_dir.BEST), "delete it")
    assert (run / run_dir.BEST).read_bytes() == whole[:len(whole) // 2]  # reported, not replaced
    assert sorted(p.name for p in run.iterdir()) == [run_dir.BEST]
    with pytest.raises(SystemExit) as exc:
        evaluate.main(["--split", "test"])  # neither --run nor --checkpoint
    assert exc.value.code == 2


def test_sampled_config_is_validated():
    with pytest.raises(ConfigError, match="eval.sampled_candidates"):
        load_config(None, ["eval.sampled_candidates=[1000, 1]"])
    with pytest.raises(ConfigError, match="eval.sampled_num_users"):
        load_config(None, ["eval.sampled_num_users=0"])


def test_cli_on_a_trained_run_reproduces_the_trainers_test_metrics(tmp_path, capsys):
    from graphrec_dist import train

    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "run"
    train.main([str(root / "configs" / "debug.yaml"), f"data.raw_dir={tmp_path / 'raw'}",
                f"data.bundle_dir={tmp_path / 'bundle'}", f"run.out_dir={run}", "train.epochs=1",
                "train.max_steps=2"])
    saved = json.loads((run / "test_metrics.json").read_text())
    capsys.readouterr()
    result = evaluate.main(["--run", str(run), "--split", "test"])
    assert json.loads(capsys.readouterr().out)["num_users"] == saved["num_users"] > 0
    for key in ("hit@10", "ndcg@20", "recall@20", "mrr"):
        assert result[key] == saved[key], key
    groups = evaluate.main(["--run", str(run), "--split", "test", "--by-popularity", "3"])["by_popularity"]
    assert sum(g["rows"] for g in groups) == saved["num_users"]  # leave-one-out: one row per user
    weighted = sum(g["rows"] * g["ndcg@10"] for g in groups) / saved["num_users"]
    assert weighted == pytest.approx(saved["ndcg@10"])


def test_benchmark_runs_at_tiny_size_and_reports_side_by_side(monkeypatch):
    from graphrec_dist.benchmarks import evaluation
    from graphrec_dist.benchmarks.evaluation import bench_evaluation, synthetic_bundle

    bundle = synthetic_bundle(200, 300, per_user=10)
    assert len(bundle.test) == len(bundle.val) == 200
    train_keys = set(map(tuple, bundle.train.tolist()))
    assert not train_keys & set(map(tuple, bundle.test.tolist()))
    # Scripted timings (each pass still runs): bare 2, 4, 3 s and evaluator 6, 12, 7 s, interleaved.
    # The ratio of the medians is 7 / 3; the median of per-repeat ratios would be 3, of means 25 / 9.
    seconds = iter([2.0, 6.0, 4.0, 12.0, 3.0, 7.0])

    def scripted(fn, repeats, warmup=0):
        fn()
        return [next(seconds)]

    monkeypatch.setattr(evaluation, "repeat_timed", scripted)
    result = bench_evaluation(num_users=200, num_books=300, dim=8, repeats=3, user_chunk=64, chunk_sweep=(32,))
    assert result["num_users"] == 200
    assert result["bare_topk_times_s"] == [2.0, 4.0, 3.0] and result["evaluator_times_s"] == [6.0, 12.0, 7.0]
    assert (result["bare_topk_s"], result["evaluator_s"]) == (3.0, 7.0)
    assert result["ratio"] == pytest.approx(7 / 3)
    memory = result["memory"]
    # 64 users x 300 books x (4-byte score + 1-byte comparison) = 96,000 bytes; half that for 32
    assert memory["evaluator_chunk_64"]["chunk_bound_mb"] == pytest.approx(96000 / 2 ** 20)
    assert memory["evaluator_chunk_32"]["chunk_bound_mb"] == pytest.approx(48000 / 2 ** 20)
    assert set(memory) == {"exact_rss_accounting", "bare_topk_peak_mb", "evaluator_chunk_64", "evaluator_chunk_32"}


@pytest.mark.parametrize("n,m", [(1, 1), (3, 7), (5, 8), (4, 2039), (2, 10000), (3, 8 * 255 * 3 + 5)])
def test_count_below_matches_a_plain_count(n, m):
    gen = torch.Generator().manual_seed(m)
    scores = torch.randint(0, 5, (n, m), generator=gen).float()
    t = torch.randint(0, 5, (n, 1), generator=gen).float()
    scores[0, 0] = float("nan")  # NaN is never below
    assert torch.equal(evaluate.count_below(scores, t), (scores < t).sum(1))


def test_count_below_does_not_overflow_byte_lanes():
    # 70000 entries: far more than 255 per byte lane before the final sum.
    assert evaluate.count_below(torch.zeros(2, 70000), torch.ones(2, 1)).tolist() == [70000, 70000]


def test_a_run_trained_on_a_gpu_is_evaluated_on_a_machine_without_one(tmp_path, capsys, monkeypatch):
    from graphrec_dist import train

    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "run"
    train.main([str(root / "configs" / "debug.yaml"), f"data.raw_dir={tmp_path / 'raw'}",
                f"data.bundle_dir={tmp_path / 'bundle'}", f"run.out_dir={run}", "train.epochs=1",
                "train.max_steps=2"])
    saved = json.loads((run / "test_metrics.json").read_text())
    for name in ("best.pt", "last.pt"):  # as a CUDA run writes them
        state = checkpoint.load_checkpoint(run / name)
        state["config"]["dist"].update(device="cuda", backend="nccl")
        torch.save(state, run / name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = evaluate.main(["--run", str(run), "--split", "test"])
    assert {k: result[k] for k in ("ndcg@10", "mrr")} == {k: saved[k] for k in ("ndcg@10", "mrr")}
    # a device named on the command line is still what is asked for
    with pytest.raises(ConfigError, match="dist.device=cuda"):
        evaluate.main(["--run", str(run), "dist.device=cuda"])
