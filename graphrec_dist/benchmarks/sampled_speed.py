"""Sampled training speed: the project's trainer against the plain PyG pipeline, side by side.

The plain pipeline is what a user writes from the PyG documentation: a ``HeteroData`` of the
bundle's edges, learnable id embeddings per node type, ``to_hetero`` of a two-layer ``SAGEConv``
GNN (``aggr="sum"`` over relations), a ``LinkNeighborLoader`` in triplet mode with one negative,
BPR, Adam. The trainer runs ``train.mode=sampled`` with the same sizes, once with its block
sampler (``train.sampler=blocks``, the default) and once on the PyG loader (``train.sampler=pyg``,
the path before the block sampler). All three run in one child process, interleaved in rounds,
so load on the machine hits them alike; each figure is the median over rounds of seed edges/s.
"""
from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import HeteroData
from torch_geometric.loader import LinkNeighborLoader
from torch_geometric.nn import SAGEConv, to_hetero
from torch_geometric.sampler import NegativeSampling

from graphrec_dist.benchmarks.common import call_in_child
from graphrec_dist.benchmarks.datasets import ensure_bundle
from graphrec_dist.benchmarks.plan import BenchPlan, bundle_dir, run_overrides
from graphrec_dist.config import load_config
from graphrec_dist.data.bundle import BOOK, RATES, USER
from graphrec_dist.data.store import load_bundle
from graphrec_dist.train import profile_steps

# The settings: 2 layers, fanout [15, 10], batch 2,048 seed edges, 1 negative, 64 dims.
SIZES = {"layers": 2, "fanout": [15, 10], "batch_size": 2048, "neg": 1, "dim": 64}
PHASES = ("sampling_s", "forward_s", "backward_s", "optimizer_s")


def trainer_overrides(sampler: str, threads: int) -> list[str]:
    """configs/default.yaml at the race's sizes, BPR on dot products, no sampling workers."""
    return ["model.name=graphsage", "train.mode=sampled", f"train.sampler={sampler}", "train.loss=bpr",
            "model.score=dot", "model.skip=true", "model.user_id_embedding=true", "model.id_dropout=0",
            f"model.num_layers={SIZES['layers']}", f"model.emb_dim={SIZES['dim']}", f"model.hidden_dim={SIZES['dim']}",
            f"train.num_neighbors=[{','.join(map(str, SIZES['fanout']))}]", f"train.batch_size={SIZES['batch_size']}",
            f"train.neg_per_pos={SIZES['neg']}", "train.num_workers=0", f"train.num_threads={threads}",
            "train.lr_schedule=none", "run.progress=false"]


class PlainPipeline:
    """The PyG-docs pipeline over a bundle, ready to time ``steps`` training steps."""

    def __init__(self, bundle, num_workers: int, seed: int = 0):
        torch.manual_seed(seed)
        data = HeteroData()
        for nt in bundle.graph.node_types:
            data[nt].num_nodes = int(bundle.graph[nt].num_nodes)
        for et in bundle.graph.edge_types:
            data[et].edge_index = bundle.graph[et].edge_index

        class GNN(nn.Module):
            def __init__(self, dim: int):
                super().__init__()
                self.conv1 = SAGEConv((-1, -1), dim)
                self.conv2 = SAGEConv((-1, -1), dim)

            def forward(self, x, edge_index):
                return self.conv2(self.conv1(x, edge_index).relu(), edge_index)

        class Model(nn.Module):
            def __init__(self, dim: int):
                super().__init__()
                self.emb = nn.ModuleDict({nt: nn.Embedding(data[nt].num_nodes, dim) for nt in data.node_types})
                self.gnn = to_hetero(GNN(dim), data.metadata(), aggr="sum")

            def forward(self, batch):
                x = {nt: self.emb[nt](batch[nt].n_id) for nt in batch.node_types}
                h = self.gnn(x, batch.edge_index_dict)
                user = h[USER][batch[USER].src_index]
                pos = (user * h[BOOK][batch[BOOK].dst_pos_index]).sum(-1)
                neg = (user * h[BOOK][batch[BOOK].dst_neg_index]).sum(-1)
                return pos, neg

        self.loader = LinkNeighborLoader(data, num_neighbors=SIZES["fanout"], batch_size=SIZES["batch_size"],
                                         edge_label_index=(RATES, bundle.train.T.contiguous()), shuffle=True,
                                         neg_sampling=NegativeSampling("triplet", amount=SIZES["neg"]),
                                         num_workers=num_workers, persistent_workers=num_workers > 0)
        self.model = Model(SIZES["dim"])
        self.it = iter(self.loader)
        with torch.no_grad():  # materialise the lazy SAGEConv((-1, -1)) parameters
            self.model(next(self.it))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=0.001)

    def run(self, steps: int) -> dict[str, float]:
        times = dict.fromkeys(PHASES, 0.0)
        seeds = 0
        for _ in range(steps):
            t0 = time.perf_counter()
            try:
                batch = next(self.it)
            except StopIteration:
                self.it = iter(self.loader)
                batch = next(self.it)
            t1 = time.perf_counter()
            pos, neg = self.model(batch)
            loss = -F.logsigmoid(pos - neg).mean()
            t2 = time.perf_counter()
            self.opt.zero_grad()
            loss.backward()
            t3 = time.perf_counter()
            self.opt.step()
            t4 = time.perf_counter()
            for key, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[key] += dt
            seeds += int(pos.shape[0])
        return _rate(times, seeds)


def _rate(times: dict[str, float], seeds: int) -> dict[str, float]:
    total = sum(times.values())
    return {**{k: round(v, 4) for k, v in times.items()}, "total_s": round(total, 4), "seed_edges": seeds,
            "seed_edges_per_s": round(seeds / total, 1) if total else None}


def race_child(bundle_path: str, overrides_base: list[str], steps: int, rounds: int, threads: int,
               plain_workers: list[int]) -> dict[str, Any]:
    """Interleaved rounds of the plain pipeline (at each worker count) and the trainer (blocks, pyg)."""
    torch.set_num_threads(threads)
    bundle = load_bundle(bundle_path)
    plains = {w: PlainPipeline(bundle, w) for w in plain_workers}
    rows: dict[str, list[dict[str, float]]] = {f"plain_workers{w}": [] for w in plain_workers}
    rows.update(trainer_blocks=[], trainer_pyg=[])
    for _ in range(rounds):
        for w, pipe in plains.items():
            rows[f"plain_workers{w}"].append(pipe.run(steps))
        for sampler in ("blocks", "pyg"):
            cfg = load_config("configs/default.yaml", overrides_base + trainer_overrides(sampler, threads))
            prof = profile_steps(cfg, steps)
            rows[f"trainer_{sampler}"].append({**{k: prof[k] for k in PHASES}, "total_s": prof["total_s"],
                                               "seed_edges_per_s": prof["seed_edges_per_s"]})
    summary = {name: _median_row(runs) for name, runs in rows.items()}
    best_plain = max((k for k in summary if k.startswith("plain")), key=lambda k: summary[k]["seed_edges_per_s"])
    return {"runs": rows, "summary": summary, "best_plain": best_plain,
            "ratio_blocks_vs_best_plain": summary["trainer_blocks"]["seed_edges_per_s"]
            / summary[best_plain]["seed_edges_per_s"],
            "ratio_pyg_vs_best_plain": summary["trainer_pyg"]["seed_edges_per_s"]
            / summary[best_plain]["seed_edges_per_s"],
            "num_users": bundle.num_users, "train_edges": len(bundle.train), "threads": threads, "steps": steps}


def _median_row(runs: list[dict[str, float]]) -> dict[str, float]:
    """The round with the median seed edges/s (its phase split comes with it)."""
    ordered = sorted(runs, key=lambda r: r["seed_edges_per_s"])
    return ordered[len(ordered) // 2]


def run_section(plan: BenchPlan) -> dict[str, Any]:
    users = plan.sampled_speed_users
    ensure_bundle(plan, users)
    base = run_overrides(plan, users)
    res = call_in_child("graphrec_dist.benchmarks.sampled_speed:race_child",
                        {"bundle_path": bundle_dir(plan, users), "overrides_base": base,
                         "steps": plan.sampled_speed_steps, "rounds": plan.sampled_speed_rounds, "threads": 2,
                         "plain_workers": list(plan.sampled_speed_workers)},
                        plan.out_dir, timeout_s=3 * 3600, tag="sampled-speed")
    res["sizes"] = SIZES
    res["trainer_command"] = ("graphrec_dist.train.profile_steps(load_config('configs/default.yaml', "
                              f"{base + trainer_overrides('blocks', 2)!r}), steps={plan.sampled_speed_steps})")
    return res
