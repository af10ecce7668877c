"""Resuming a checkpoint on another number of ranks (world size W saved, W' now).

``dist.sharding=users`` (exact): the user rows are re-cut by :func:`graphrec_dist.distributed.shard`
for W'. Each rank reads only the saved per-rank files that hold rows of its new block, and takes
those rows' optimizer moments with them (:func:`recut_rows`). Everything else of a sharded run does
not depend on W: batches and negatives come from generators seeded by (seed, epoch, step), the
item side and its optimizer state are replicated, and every rank's global RNG stays in step (the
id dropout draws for all users on every rank), so each new rank takes saved rank 0's RNG state and
rank 0 the whole partial epoch loss (:func:`recut_state`). The run then continues as the
uninterrupted run would, up to float summation order (the all-reduces add W' partial sums).

Replicated DDP (not exact): W deals the seed edges out, so another W changes the global batch,
the steps of an epoch and the per-rank sampling streams; :func:`replicated_warning` says so.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from graphrec_dist import checkpoint
from graphrec_dist.config import TrainConfig
from graphrec_dist.data.bundle import USER, Bundle
from graphrec_dist.distributed import shard
from graphrec_dist.errors import ConfigError
from graphrec_dist.sampling import steps_per_epoch


def data_hash(bundle: Bundle) -> str:
    """A hash of a user-sharded bundle's data that is the same on every rank for any W: node
    counts, the number of training pairs, every book's training count, the whole-graph degree
    statistics of the user relations and the item side's edges (the parts each rank holds whole).
    The user rows themselves are covered by each rank file's own ``bundle_hash`` at the same W."""
    digest, sh = hashlib.sha256(), bundle.shard
    digest.update(f"users={sh.num_users};train={sh.num_train};".encode())

    def add(name: str, tensor: torch.Tensor) -> None:
        array = np.ascontiguousarray(tensor.detach().cpu().numpy())
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())

    for ntype in sorted(bundle.graph.node_types):
        if ntype != USER:
            digest.update(f"{ntype}={int(bundle.graph[ntype].num_nodes)};".encode())
    add("book_train_counts", sh.book_train_counts)
    for et in sorted(sh.dst_stats):
        add(f"{et}.degree", sh.dst_stats[et][0])
        add(f"{et}.weight", sh.dst_stats[et][1])
    for et in sorted(bundle.graph.edge_types):
        if USER not in (et[0], et[2]):
            add(f"{et}.edge_index", bundle.graph[et].edge_index)
            add(f"{et}.edge_weight", bundle.graph[et].edge_weight)
    return digest.hexdigest()[:16]


def check_data(path: Path, state: dict[str, Any], bundle: Bundle, what_to_do: str) -> None:
    """A ConfigError when the sharded checkpoint ``state`` was trained on other data than ``bundle``
    (by :func:`data_hash`; checkpoints saved before it was recorded pass)."""
    saved = state["sharding"].get("data_hash")
    if saved is not None and saved != data_hash(bundle):
        raise ConfigError(f"train.resume: {path} was trained on other data (item side or counts {saved}, this "
                          f"bundle {bundle.path}: {data_hash(bundle)}); {what_to_do}")


def recut_rows(path: Path, state: dict[str, Any], bundle: Bundle, param_index: dict[str, int],
               map_location: torch.device, what_to_do: str) -> dict[str, Any]:
    """This rank's file of the sharded checkpoint ``path`` (main file ``state``, saved at another
    world size), re-cut for the users ``bundle.shard`` owns now: ``model`` (the owned parameters'
    rows) and ``optimizer`` (the saved rank-0-of-the-overlap state, with the owned parameters'
    per-row moments re-cut). ``param_index``: owned parameter name -> its index in the optimizer's
    state dict. Only the files that hold some of the new rows are read."""
    man, sh = state["sharding"], bundle.shard
    old_world, n = man["world_size"], man["num_users"]
    pieces = []  # (file state, first row of the new block it holds, one past the last), in row order
    for r in range(old_world):
        old = shard(n, r, old_world)
        lo, hi = max(old.start, sh.start), min(old.stop, sh.stop)
        if lo < hi:
            own = checkpoint.shard_state(path, state, r, map_location, what_to_do)
            pieces.append((own, lo - old.start, hi - old.start))
    if not pieces:  # a rank without users (more ranks than users) still needs the replicated state
        pieces = [(checkpoint.shard_state(path, state, 0, map_location, what_to_do), 0, 0)]
    model = {key: torch.cat([own["model"][key][a:b] for own, a, b in pieces]) for key in man["owned"]}
    optimizer = pieces[0][0]["optimizer"]
    for key in man["owned"]:
        idx = param_index[key]
        moments = optimizer["state"].get(idx, {})
        for name, value in moments.items():
            if torch.is_tensor(value) and value.dim() > 0:  # per-row moments; 0-dim: the step count
                moments[name] = torch.cat([own["optimizer"]["state"][idx][name][a:b] for own, a, b in pieces])
    return {"model": model, "optimizer": optimizer, "bundle_hash": None}


def _same_rng(states: list[dict[str, Any]]) -> bool:
    """Whether every saved rank's torch streams (CPU, and CUDA when saved) are the same. Python's
    and numpy's generators are not compared: training draws nothing from them (it would not be
    reproducible: each process seeds them at random), so they differ between ranks and matter to none."""
    first = states[0]
    for other in states[1:]:
        if not torch.equal(first["torch"], other["torch"]):
            return False
        if "cuda" in first and not all(torch.equal(a, b) for a, b in zip(first["cuda"], other.get("cuda", []))):
            return False
    return True


def recut_state(state: dict[str, Any], world_size: int) -> tuple[dict[str, Any], bool]:
    """(``state`` with its per-rank ``rng`` and ``loss_sums`` dealt out to ``world_size`` ranks,
    whether that is exact). Exact when every saved rank's RNG is the same, as user-sharded training
    keeps them; then each new rank starts from it, and rank 0 carries the epoch's partial loss sum."""
    rng, sums = state.get("rng"), state.get("loss_sums")
    exact = not rng or _same_rng(rng)
    out = dict(state, world_size=world_size)
    if rng:
        out["rng"] = [rng[0]] * world_size
    if sums:
        total = (sum(s for s, _ in sums), sum(c for _, c in sums))
        out["loss_sums"] = [total] + [(0.0, 0)] * (world_size - 1)
    return out, exact


def for_world(path: Path, state: dict[str, Any], world_size: int, sharded: bool, bundle: Bundle,
              tc: TrainConfig) -> tuple[dict[str, Any], Optional[str], bool]:
    """(``state`` dealt out to ``world_size`` ranks, what to tell the user or None, whether exact).
    A checkpoint of this world size comes back as it is."""
    saved = state.get("world_size")
    if saved is None or saved == world_size:
        return state, None, True
    state, same_streams = recut_state(state, world_size)
    step = state["trainer"]["step_in_epoch"]
    if sharded and same_streams:
        return state, (f"resuming {path} (users sharded over {saved} ranks) on {world_size} ranks: the user rows "
                       "and their optimizer moments are re-cut; the run continues exactly as on "
                       f"{saved} ranks (up to float summation order)"), True
    if sharded:
        return state, (f"resuming {path} (users sharded over {saved} ranks) on {world_size} ranks is not exact: "
                       "the saved ranks' random streams differ, and each new rank continues from rank 0's"), False
    steps = (steps_per_epoch(len(bundle.train), tc.batch_size, saved, tc.edges_per_epoch),
             steps_per_epoch(len(bundle.train), tc.batch_size, world_size, tc.edges_per_epoch))
    return state, replicated_warning(path, saved, world_size, *steps, step, tc.lr_schedule == "cosine"), False


def replicated_warning(path: Path, saved_world: int, world: int, saved_steps: int, steps: int,
                       step_in_epoch: int, cosine: bool) -> str:
    """What changes when a replicated (DDP) checkpoint of ``saved_world`` ranks resumes on ``world``."""
    text = (f"resuming {path} (replicated, saved on {saved_world} ranks) on {world} ranks is not exact: the seed "
            f"edges are dealt out to {world} ranks (a global batch of {world} x train.batch_size, {steps} steps an "
            f"epoch instead of {saved_steps}) and each rank's sampling stream is seeded by its rank, so the "
            "trajectory differs from the uninterrupted run's; the model and optimizer state continue")
    if cosine and steps != saved_steps:
        text += (f"; the cosine schedule keeps its saved length ({saved_steps} steps an epoch), so it ends "
                 f"{'early' if steps < saved_steps else 'late'} (restart with train.resume=never for a new one)")
    if step_in_epoch:
        text += (f"; mid-epoch (step {step_in_epoch}): the epoch goes on from step {step_in_epoch} of {steps} with "
                 "the new ranks' share of the edges")
    return text
