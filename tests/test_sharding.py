"""dist.sharding=users: each rank holds its block of users and the whole item side.

In-process: a bundle cut into W shards covers every user, edge and split row exactly once; the
sharded batches, negatives and initial user rows are the same for any W; the sharded model on one
process is the replicated model's computation. Under torchrun (2 gloo ranks, debug data): the
sharded run equals the 1-process run of the same config to float summation order, a finished
sharded run is evaluated whole by ``evaluate --run`` with the same metrics, and a rank killed
mid-epoch resumes exactly, on 2 ranks again or on 1 or 3 (the users re-cut).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import bounded
import pytest
import torch
from test_faults import _kill_then_resume
from test_sampling import toy_bundle

from graphrec_dist import checkpoint, evaluate
from graphrec_dist.config import load_config
from graphrec_dist.data.bundle import RATES, REV_RATES
from graphrec_dist.data.partition import destination_stats, shard_bundle
from graphrec_dist.distributed import DistContext
from graphrec_dist.errors import ConfigError
from graphrec_dist.models.sage_encoder import INIT_BLOCK, init_rows_
from graphrec_dist.sampling import ShardedTripletLoader

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "debug.yaml"
RUN_TIMEOUT_S = 300
# The full-graph regime of configs/demo.yaml (softmax over every item, mask_seen, cosine, item
# bias, id_dropout: its random draws must stay in step), plus the path term, on the debug data. 1,024
# seed edges an epoch in batches of 256: 4 global steps an epoch, 8 in all.
SHARDED = ["dist.sharding=users", "train.mode=full_graph", "train.loss=softmax", "train.softmax_per_user=true",
           "train.mask_seen=true", "model.score=cosine", "model.temperature=0.2", "model.item_bias=true",
           "model.id_dropout=0.1", "train.l2=0", "train.edges_per_epoch=1024", "train.lr=0.005",
           "train.checkpoint_every=2", "train.resume=auto",
           # the path term over TF-IDF similar books: item-side parameters fed by every rank's users
           "model.path.relations=[similar]"]
TIMING = ("epoch_time_s", "edges_per_s", "allreduce_s_per_step", "peak_rss_mib")


def _global_rows(part, pairs: torch.Tensor) -> torch.Tensor:
    out = pairs.clone()
    out[:, 0] += part.shard.start
    return out


@pytest.mark.parametrize("world", [2, 3])
def test_shards_cover_every_user_edge_and_split_row_once(world: int) -> None:
    bundle = toy_bundle(num_users=11)
    parts = [shard_bundle(bundle, r, world) for r in range(world)]
    assert sum(p.num_users for p in parts) == 11
    assert [p.shard.start for p in parts] == [11 * r // world for r in range(world)]
    for et in (RATES, REV_RATES):
        edges = []
        for p in parts:
            ei = p.graph[et].edge_index.clone()
            ei[0 if et == RATES else 1] += p.shard.start
            edges.append(ei)
        whole = bundle.graph[et].edge_index
        assert sorted(map(tuple, torch.cat(edges, 1).T.tolist())) == sorted(map(tuple, whole.T.tolist()))
    for split in ("train", "val", "test"):
        rows = torch.cat([_global_rows(p, p.split(split)) for p in parts])
        assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, bundle.split(split).tolist()))
    # Each local training row knows its position in the whole bundle's training pairs.
    for p in parts:
        assert torch.equal(bundle.train[p.shard.train_ids], _global_rows(p, p.train))
    # The item side is whole on every rank, with the global counts a rank cannot see.
    counts, totals = destination_stats(bundle.graph)[RATES]
    for p in parts:
        tag = ("book", "has_tag", "tag")
        assert torch.equal(p.graph[tag].edge_index, bundle.graph[tag].edge_index)
        assert torch.equal(p.shard.dst_stats[RATES][0], counts) and torch.equal(p.shard.dst_stats[RATES][1], totals)
        assert torch.equal(p.shard.book_train_counts, torch.bincount(bundle.train[:, 1], minlength=bundle.num_books))


def test_sharded_batches_and_negatives_do_not_depend_on_the_world_size() -> None:
    bundle = toy_bundle(num_users=13, num_books=9, per_user=4)

    def batches(world: int) -> list[list[tuple]]:
        loaders = [ShardedTripletLoader(shard_bundle(bundle, r, world), 8, 3, seed=5) for r in range(world)]
        steps = [[] for _ in range(len(loaders[0]))]
        for loader in loaders:
            for s, batch in enumerate(loader.epoch(1)):
                assert batch.total == min(8, len(bundle.train) - 8 * s)
                users = batch.users + loader.shard.start
                steps[s] += [(int(u), int(p), tuple(n.tolist())) for u, p, n in zip(users, batch.pos, batch.neg)]
        return [sorted(rows) for rows in steps]

    one = batches(1)
    assert len(one) == -(-len(bundle.train) // 8) and sum(len(s) for s in one) == len(bundle.train)
    assert batches(2) == one and batches(3) == one
    positives = {tuple(r) for r in bundle.train.tolist()}
    assert all((u, n) not in positives for step in one for u, _, negs in step for n in negs)
    # A resumed epoch starts mid-way with the very same batches.
    loader = ShardedTripletLoader(shard_bundle(bundle, 0, 1), 8, 3, seed=5)
    later = list(loader.epoch(1, start_step=2))
    assert [b.neg.tolist() for b in later] == [b.neg.tolist() for b in list(loader.epoch(1))[2:]]


def test_sharded_user_rows_start_the_same_on_any_rank() -> None:
    whole = torch.empty(INIT_BLOCK + 300, 4)
    init_rows_(whole, 0, seed=3, std=0.1)
    part = torch.empty(200, 4)
    init_rows_(part, INIT_BLOCK - 100, seed=3, std=0.1)  # straddles two blocks
    assert torch.equal(part, whole[INIT_BLOCK - 100:INIT_BLOCK + 100])
    assert 0.08 < float(whole.std()) < 0.12


@pytest.mark.parametrize("override, key", [
    ("train.mode=sampled", "train.mode"), ("model.name=mf", "model.name"), ("model.aggr=max", "model.aggr"),
    ("model.emb_dropout=0.1", "model.emb_dropout"), ("eval.protocol=sampled", "eval.protocol")])
def test_what_sharding_does_not_support_is_refused_by_name(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'.*dist.sharding=users"):
        load_config(CONFIG, [*SHARDED, override])


def test_a_sharded_bundle_refuses_the_protocols_that_deal_out_global_users() -> None:
    part = shard_bundle(toy_bundle(), 0, 2)
    cfg = load_config(None, ["eval.protocol=sampled"]).eval

    class Zeros:
        num_items = part.num_books

        def scores(self, users):
            return torch.zeros(len(users), self.num_items)

    with pytest.raises(ConfigError, match="user-sharded bundle"):
        evaluate.evaluate_scorer(Zeros(), part, "val", cfg, DistContext())


# -- under torchrun ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("sharding_data")
    return [f"data.raw_dir={root / 'raw'}", f"data.bundle_dir={root / 'bundle'}"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _train_cmd(out: Path, data_dirs: list[str], nproc: int, *extra: str) -> list[str]:
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--local-addr=127.0.0.1",
               f"--nproc_per_node={nproc}", "-m", "graphrec_dist.train"] if nproc > 1
              else [sys.executable, "-m", "graphrec_dist.train"])
    return [*launch, str(CONFIG), f"run.out_dir={out}", *data_dirs, *SHARDED, *extra]


def _outcome(out: Path) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    test = json.loads((out / "test_metrics.json").read_text())
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows], test


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, data_dirs) -> Path:
    out = tmp_path_factory.mktemp("sharded_w1") / "run"
    proc = bounded.run(_train_cmd(out, data_dirs, 1), RUN_TIMEOUT_S, cwd=ROOT, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, data_dirs, one_process) -> Path:
    out = tmp_path_factory.mktemp("sharded_w2") / "run"
    proc = bounded.run(_train_cmd(out, data_dirs, 2), RUN_TIMEOUT_S, cwd=ROOT, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.multiproc
def test_two_sharded_ranks_train_what_one_process_trains(one_process: Path, two_ranks: Path) -> None:
    one, two = _outcome(one_process), _outcome(two_ranks)
    assert len(one[0]) == len(two[0]) == 2
    for a, b in zip(one[0], two[0]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["val_ndcg@10"] == pytest.approx(b["val_ndcg@10"], abs=1e-4)
    for key in ("ndcg@10", "hit@10", "ndcg@20", "mrr"):
        assert one[1][key] == pytest.approx(two[1][key], abs=1e-4), key
    # The 2-rank run wrote one file of user rows per rank, named by the manifest in best.pt.
    manifest = torch.load(two_ranks / "best.pt", weights_only=False)["sharding"]
    assert manifest["world_size"] == 2 and all((two_ranks / f).is_file() for f in manifest["files"])
    assert len(list(two_ranks.glob("last.step*.rank*of2.pt"))) == 2  # older steps' files removed
    # The run read back whole (user rows reassembled in rank order) scores as the sharded evaluator did.
    whole = evaluate.main(["--run", str(two_ranks), "--split", "test"])
    assert whole["ndcg@10"] == pytest.approx(two[1]["ndcg@10"], abs=1e-12)
    _, model, bundle = checkpoint.load_run(two_ranks)
    assert model.encoder.emb["user"].weight.shape[0] == bundle.num_users


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_killed_sharded_rank_resumes_exactly(tmp_path, data_dirs, two_ranks: Path) -> None:
    out = tmp_path / "run"
    # Rank 1 stops after global step 7 and is killed; the last checkpoint is step 6's.
    cmd = _train_cmd(out, data_dirs, 2, "debug.fail_after_step=7", "debug.fail_mode=hang")
    proc, err, _ = _kill_then_resume(out, cmd, "hang_rank1.pid")
    assert proc.returncode != 0, err[-3000:]
    state = torch.load(out / "last.pt", weights_only=False)
    assert state["trainer"]["global_step"] == 6 and all((out / f).is_file() for f in state["sharding"]["files"])
    # The killed run's folder as a cluster would find it, resumed on 1 and on 3 ranks as well.
    elsewhere = {world: tmp_path / f"on{world}" for world in (1, 3)}
    for folder in elsewhere.values():
        shutil.copytree(out, folder)
    again = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "at epoch 1 step 2" in again.stderr
    assert _outcome(out) == _outcome(two_ranks)
    # Elastic: the users re-cut for 1 or 3 ranks (each reads the rows it owns now, with their
    # optimizer moments) continue the 2-rank trajectory, to float summation order.
    want_rows, want_test = _outcome(two_ranks)
    for world, folder in elsewhere.items():
        proc = bounded.run(_train_cmd(folder, data_dirs, world), RUN_TIMEOUT_S, cwd=ROOT, env=_env())
        assert proc.returncode == 0, proc.stderr[-3000:]
        said = f"(users sharded over 2 ranks) on {world} ranks: the user rows"
        assert said in proc.stderr and "continues exactly" in proc.stderr, proc.stderr[-3000:]
        assert proc.stderr.index(said) < proc.stderr.index("at epoch 1 step 2")
        rows, test = _outcome(folder)
        assert [r["epoch"] for r in rows] == [r["epoch"] for r in want_rows]
        for got, want in zip(rows, want_rows):
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-5, abs=1e-5), (world, got["epoch"])
            for key in [k for k in want if k.startswith("val_")]:
                assert got[key] == pytest.approx(want[key], abs=1e-4), (world, key)
        for key in ("ndcg@10", "hit@10", "ndcg@20", "mrr"):
            assert test[key] == pytest.approx(want_test[key], abs=1e-4), (world, key)
        manifest = torch.load(folder / "last.pt", weights_only=False)["sharding"]
        assert manifest["world_size"] == world and not list(folder.glob("last.step*.rank*of2.pt"))


def _same_bundle(a, b) -> None:
    assert (a.shard.start, a.shard.stop, a.num_users) == (b.shard.start, b.shard.stop, b.num_users)
    assert set(a.graph.edge_types) == set(b.graph.edge_types)
    for et in a.graph.edge_types:
        assert torch.equal(a.graph[et].edge_index, b.graph[et].edge_index), et
        assert torch.equal(a.graph[et].edge_weight, b.graph[et].edge_weight), et
    for split in ("train", "val", "test", "cold_val", "cold_user_history"):
        assert torch.equal(a.split(split), b.split(split)), split
    assert torch.equal(a.shard.train_ids, b.shard.train_ids)
    assert torch.equal(a.shard.book_train_counts, b.shard.book_train_counts)
    assert a.users["user_id"].tolist() == b.users["user_id"].tolist()


def test_a_rank_loads_its_partitions_as_the_whole_bundle_cut_in_memory(tmp_path) -> None:
    from graphrec_dist.data import cli as data_cli
    from graphrec_dist.data.partition import load_user_shard
    from graphrec_dist.data.store import load_bundle
    from graphrec_dist.errors import DataError

    dirs = [f"data.raw_dir={tmp_path / 'raw'}", f"data.bundle_dir={tmp_path / 'bundle'}", "data.synth_users=60"]
    data_cli.main(["build", str(CONFIG), *dirs, "--partitions", "4"])
    whole = load_bundle(tmp_path / "bundle")
    for world in (1, 2, 4):  # 4 partitions serve 1, 2 or 4 ranks
        for rank in range(world):
            _same_bundle(load_user_shard(tmp_path / "bundle", rank, world), shard_bundle(whole, rank, world))
    with pytest.raises(DataError, match="4 user partitions; 3 ranks need a multiple of 3"):
        load_user_shard(tmp_path / "bundle", 0, 3)
