"""Sampling throughput: seed edges/s of the triplet LinkNeighborLoader on Graph3, per installed
sampling backend (pyg-lib, torch-sparse) and per ``num_workers``.

The loader is the trainer's own (:func:`graphrec_dist.sampling.make_link_loader`); the timed
loop only iterates it, so the figure is the data path alone, without the model.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch_geometric.typing as pyg_typing

from graphrec_dist.benchmarks.common import call_in_child, median, sampling_backends
from graphrec_dist.benchmarks.datasets import ensure_bundle
from graphrec_dist.benchmarks.plan import SPEED_OVERRIDES, SPEED_PRESET, bundle_dir, run_overrides
from graphrec_dist.config import load_config
from graphrec_dist.data.store import load_bundle
from graphrec_dist.sampling import make_link_loader, shard_edges


@contextlib.contextmanager
def forced_backend(name: str) -> Iterator[None]:
    """Make PyG's NeighborSampler use ``name`` ('pyg-lib' or 'torch-sparse') inside the block.

    PyG picks pyg-lib whenever it is importable; hiding it (``WITH_PYG_LIB = False``) makes it
    fall through to torch-sparse. Worker processes are forked inside the block and inherit it.
    """
    saved = (pyg_typing.WITH_PYG_LIB, pyg_typing.WITH_TORCH_SPARSE)
    if name == "torch-sparse":
        pyg_typing.WITH_PYG_LIB = False
    elif name != "pyg-lib":
        raise ValueError(f"unknown sampling backend {name!r}")
    try:
        yield
    finally:
        pyg_typing.WITH_PYG_LIB, pyg_typing.WITH_TORCH_SPARSE = saved


def build_triplet_loader(bundle, batch_size: int, num_neighbors: list[int], neg_per_pos: int,
                         num_workers: int, seed: int):
    """The trainer's loader (:func:`graphrec_dist.sampling.make_link_loader`) over one epoch's
    shuffled training edges (:func:`graphrec_dist.sampling.shard_edges`, one rank)."""
    ids = shard_edges(int(bundle.train.shape[0]), epoch=0, seed=seed, rank=0, world_size=1)
    return make_link_loader(bundle, batch_size=batch_size, num_neighbors=num_neighbors, neg_per_pos=neg_per_pos,
                            num_workers=num_workers, seed=seed, edge_ids=ids)


def time_loader(make_loader, batches: int) -> dict[str, float]:
    """Startup (first batch) and steady-state seconds of ``batches`` further batches."""
    loader = make_loader()
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    startup = time.perf_counter() - t0
    t1 = time.perf_counter()
    done = 0
    for _ in range(batches):
        try:
            next(it)
        except StopIteration:
            break
        done += 1
    steady = time.perf_counter() - t1
    del it, loader
    return {"startup_s": startup, "steady_s": steady, "batches": done}


def measure_sampling(bundle_dir: str, batch_size: int = 2048, num_neighbors: list[int] | None = None,
                     neg_per_pos: int = 1, workers: list[int] | None = None, batches: int = 20,
                     repeats: int = 3, seed: int = 0, num_threads: int = 0) -> dict[str, Any]:
    """Seed edges/s per (backend, num_workers), medians of ``repeats``; runs in a child process.

    ``num_threads`` > 0 sets torch's intra-op threads (as ``train.num_threads`` does in training)."""
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    bundle = load_bundle(bundle_dir)
    fanout = list(num_neighbors or [15, 10])
    installed = sampling_backends()
    rows = []
    for backend, version in installed.items():
        if version is None:
            rows.append({"backend": backend, "installed": False})
            continue
        for nw in workers or [0, 2]:
            runs = []
            with forced_backend(backend):
                for r in range(repeats):
                    runs.append(time_loader(lambda nw=nw, r=r: build_triplet_loader(
                        bundle, batch_size, fanout, neg_per_pos, nw, seed + r), batches))
            steady = median([x["steady_s"] for x in runs])
            done = runs[0]["batches"]
            rows.append({
                "backend": backend, "installed": True, "version": version, "num_workers": nw,
                "batches": done, "startup_s": round(median([x["startup_s"] for x in runs]), 4),
                "seconds_per_batch": round(steady / max(done, 1), 5),
                "seed_edges_per_s": round(done * batch_size / steady, 1) if steady > 0 else None,
                "repeats_steady_s": [round(x["steady_s"], 4) for x in runs],
            })
    return {
        "bundle_dir": bundle_dir, "num_users": bundle.num_users, "num_books": bundle.num_books,
        "train_edges": int(bundle.train.shape[0]), "batch_size": batch_size, "num_neighbors": fanout,
        "neg_per_pos": neg_per_pos, "repeats": repeats, "rows": rows,
        "torch_threads": torch.get_num_threads(),
    }


def run_section(plan) -> dict[str, Any]:
    """Seed edges/s of the trainer's loader on Graph3 at ``plan.sampling_users`` (a child process)."""
    ensure_bundle(plan, plan.sampling_users)
    train = load_config(SPEED_PRESET, run_overrides(plan, plan.sampling_users, *SPEED_OVERRIDES)).train
    args = {"bundle_dir": bundle_dir(plan, plan.sampling_users), "batch_size": train.batch_size,
            "num_neighbors": list(train.num_neighbors), "neg_per_pos": train.neg_per_pos,
            "workers": plan.sampling_workers, "batches": plan.sampling_batches, "repeats": plan.repeats,
            "num_threads": train.num_threads}
    return call_in_child("graphrec_dist.benchmarks.sampling:measure_sampling", args, plan.out_dir,
                         timeout_s=3 * 3600, tag=f"sampling-{plan.sampling_users}")
