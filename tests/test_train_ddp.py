"""Two-process DDP training on CPU (gloo) under torchrun: completes, learns, ranks stay in sync."""
import json
import os
import sys
from pathlib import Path

import bounded
import pytest

from graphrec_dist.config import load_config
from graphrec_dist.data.store import load_bundle
from graphrec_dist.distributed import DistContext
from graphrec_dist.evaluate import evaluate_scorer
from graphrec_dist.models import build_model

# Each rank records a digest of its live parameters after every epoch and of the final model.
WORKER = '''
import hashlib, json, sys
from pathlib import Path
import torch
from graphrec_dist.config import load_config
from graphrec_dist.distributed import cleanup, init_distributed
from graphrec_dist.train import TrainHooks, run_training


def digest(model):
    flat = torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.is_floating_point()])
    return hashlib.sha256(flat.numpy().tobytes()).hexdigest()


cfg = load_config(sys.argv[1], sys.argv[2:])
ctx = init_distributed("gloo", "cpu")
try:
    holder, digests = {}, []
    hooks = TrainHooks(on_start=lambda model: holder.setdefault("model", model),
                       on_epoch_end=lambda row, path: digests.append(digest(holder["model"])))
    result = run_training(cfg, ctx, hooks)
    out = {"rank": ctx.rank, "world": ctx.world_size, "epochs": digests, "final": digest(result.model),
           "history": result.history, "test": result.test_metrics}
    Path(cfg.run.out_dir, f"rank{ctx.rank}.json").write_text(json.dumps(out))
finally:
    cleanup(ctx)
'''


@pytest.mark.multiproc
@pytest.mark.slow
@pytest.mark.parametrize("regime", [[], ["train.mode=full_graph", "train.loss=softmax", "model.score=cosine",
                                         "model.temperature=0.2", "model.emb_dropout=0.2"]],
                         ids=["sampled", "full_graph"])
def test_two_process_gloo_training(tmp_path: Path, regime: list[str]) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    overrides = [f"data.raw_dir={tmp_path}/raw", f"data.bundle_dir={tmp_path}/bundle", "data.synth_users=300",
                 f"run.out_dir={out}", "run.progress=false", "train.epochs=6", "train.lr=0.01",
                 "train.edges_per_epoch=16384", "train.batch_size=256", "train.num_neighbors=[5,3]",
                 "train.num_threads=1", "eval.ks=[10]", "train.patience=6", *regime]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    # --standalone: torchrun binds its rendezvous store to a port the OS picks and keeps it open,
    # so no other run can take the port between choosing and binding it.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--local-addr=127.0.0.1",
           "--nproc_per_node=2", str(script), "configs/debug.yaml", *overrides]
    proc = bounded.run(cmd, timeout_s=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    # identical parameters on both ranks after every epoch and at the end
    assert len(ranks[0]["epochs"]) == 6 and ranks[0]["epochs"] == ranks[1]["epochs"]
    assert ranks[0]["final"] == ranks[1]["final"]
    history = ranks[0]["history"]
    assert history == ranks[1]["history"] and ranks[0]["test"] == ranks[1]["test"]
    # every rank ran the same steps: 16384 edges / 2 ranks / 256 = 32 steps an epoch
    assert [row["step"] for row in history] == [32 * (i + 1) for i in range(6)]
    assert all(row["seed_edges"] == 16384 for row in history)
    assert history[-1]["loss"] < history[0]["loss"]
    # validation NDCG ends above popularity's
    cfg = load_config("configs/debug.yaml", overrides + ["model.name=popularity"])
    bundle = load_bundle(cfg.data.bundle_dir)
    pop = build_model(cfg, bundle)
    pop.fit(bundle, DistContext())
    pop_ndcg = evaluate_scorer(pop.scorer(bundle, DistContext()), bundle, "val", cfg.eval,
                               DistContext())["ndcg@10"]
    best = max(row["val_ndcg@10"] for row in history)
    assert best > pop_ndcg, (best, pop_ndcg)
    assert (out / "best.pt").is_file() and (out / "test_metrics.json").is_file()
