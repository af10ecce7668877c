"""Sharded full-ranking evaluation (and the notebooks' sampled-candidate protocol).

Users with a held-out item in the split are cut into chunks of ``eval.user_chunk`` and each rank
takes a contiguous run of chunks. It scores each chunk against every book (one matrix multiply per
chunk, so memory is bounded by the chunk, not by users x books) and finds the rank of each
held-out item without sorting: rank = #unmasked other items whose score is not below the held-out
item's (ties, and NaN scores, count against the model). Training items are masked; with
``eval.exclude_other_holdout`` the user's item of the other held-out split is masked too.

Every rank turns its ranks into per-user metric values and fixed-point int64 sums
(:mod:`graphrec_dist.metrics`); one all_reduce of the sums and counts (plus the per-user ranks
when exporting) follows, and every rank divides once. Integer sums make the result bit-identical
for any number of workers.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from graphrec_dist import metrics
from graphrec_dist.breakdown import by_popularity
from graphrec_dist.checkpoint import load_run
from graphrec_dist.config import EvalConfig, parse_args
from graphrec_dist.data.bundle import Bundle, pairs_csr
from graphrec_dist.distributed import DistContext, all_reduce_sum, barrier, cleanup, init_distributed, shard
from graphrec_dist.errors import ConfigError, DataError
from graphrec_dist.io_utils import atomic_path
from graphrec_dist.logging_utils import get_logger, setup_logging
from graphrec_dist.models.base import Scorer
from graphrec_dist.models.sparse import csr_rows

OTHER_SPLIT = {"val": "test", "test": "val", "cold_val": "cold_test", "cold_test": "cold_val",
               "cold_user_val": "cold_user_test", "cold_user_test": "cold_user_val"}
COLD_ITEM_SPLITS = ("cold_val", "cold_test")  # ranked against the cold items only
NEW_USER_SPLITS = ("cold_user_val", "cold_user_test")  # users scored from a given history
SAMPLED_BLOCK = 256  # users per negative-sampling block; fixed so negatives never depend on world size

log = get_logger("evaluate")


@dataclass
class Holdout:
    """The held-out rows of one split, grouped by user (rows sorted by user)."""

    users: np.ndarray  # int64 [U] users with at least one held-out row, ascending
    row_ptr: np.ndarray  # int64 [U+1] rows of users[i] are row_ptr[i]:row_ptr[i+1]
    items: np.ndarray  # int64 [n] held-out book of each row

    @classmethod
    def from_pairs(cls, pairs: torch.Tensor) -> Holdout:
        """From a split's int64 [n, 2] (user, book) rows, in any order."""
        arr = pairs.cpu().numpy().astype(np.int64).reshape(-1, 2)
        arr = arr[np.lexsort((arr[:, 1], arr[:, 0]))]
        users, counts = np.unique(arr[:, 0], return_counts=True)
        row_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(users.astype(np.int64), row_ptr, arr[:, 1].copy())


@dataclass
class Masks:
    """Per-user items that never count in a ranking: training items (+ the other held-out split)."""

    csrs: list[tuple[np.ndarray, np.ndarray]]

    @classmethod
    def for_split(cls, bundle: Bundle, split: str, cfg: EvalConfig) -> Masks:
        """The user's known items (training items; a new user's given history), plus the other
        held-out split's items with ``cfg.exclude_other_holdout``. For the cold-item splits, in
        positions among the cold items (training never holds one, so only the other split can)."""
        candidates = bundle.cold_items.numpy() if split in COLD_ITEM_SPLITS else None
        if split in NEW_USER_SPLITS:
            csrs = [pairs_csr(bundle.split("cold_user_history"), bundle.num_users)]
        else:
            csrs = [] if candidates is not None else [bundle.train_csr()]
        if cfg.exclude_other_holdout:
            other = bundle.split(OTHER_SPLIT[split]).numpy()
            if candidates is not None:
                other = np.stack([other[:, 0], np.searchsorted(candidates, other[:, 1])], axis=1)
            csrs.append(pairs_csr(torch.from_numpy(other), bundle.num_users))
        return cls(csrs)

    def pairs(self, row_users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, item) of every masked item of each row's user, duplicates removed."""
        if not self.csrs:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        rows, cols = [], []
        for indptr, indices in self.csrs:
            pos, entry = csr_rows(indptr, row_users)
            rows.append(pos)
            cols.append(indices[entry])
        row, col = np.concatenate(rows), np.concatenate(cols)
        # One CSR is sorted within each row: a neighbour check finds duplicates without sorting.
        if len(self.csrs) > 1 or np.any((row[1:] == row[:-1]) & (col[1:] == col[:-1])):
            width = int(col.max()) + 1 if col.size else 1
            key = np.unique(row * width + col)
            row, col = key // width, key % width
        return row, col


class CandidateScorer:
    """A scorer restricted to a fixed set of items (the cold items' "new arrivals" shelf)."""

    def __init__(self, scorer: Scorer, items: np.ndarray):
        self.scorer = scorer
        self.items = torch.as_tensor(items, dtype=torch.int64)
        self.num_items = len(items)

    def scores(self, users: torch.Tensor) -> torch.Tensor:
        full = self.scorer.scores(users)
        return full.index_select(1, self.items.to(full.device))


def split_scorer(model, bundle: Bundle, split: str, ctx: DistContext, cfg: EvalConfig) -> Scorer:
    """The scorer a split is evaluated with: new users are scored from their given history
    (``model.history_scorer``; nothing is trained), everyone else by ``model.scorer``."""
    if split in NEW_USER_SPLITS:
        history = pairs_csr(bundle.split("cold_user_history"), bundle.num_users)
        return model.history_scorer(bundle, history, ctx)
    return model.scorer(bundle, ctx)


def _row_owners(hold: Holdout, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """For users[lo:hi]: (their rows' global indices, each row's user position within the chunk)."""
    counts = np.diff(hold.row_ptr[lo:hi + 1])
    rows = np.arange(hold.row_ptr[lo], hold.row_ptr[hi], dtype=np.int64)
    return rows, np.repeat(np.arange(hi - lo, dtype=np.int64), counts)


def full_ranks(scores: torch.Tensor, row_local: np.ndarray, targets: np.ndarray,
               mask_row: np.ndarray, mask_col: np.ndarray) -> torch.Tensor:
    """int64 [n] tie-aware rank of each held-out row among all items, masked items left out.

    ``scores`` [u, I] (not modified); row i belongs to score row ``row_local[i]`` and holds out
    ``targets[i]``; (``mask_row``, ``mask_col``) are the distinct masked (row, item) pairs.
    """
    dev = scores.device
    rows = scores if _is_identity(row_local, scores.shape[0]) else scores[torch.as_tensor(row_local, device=dev)]
    tgt = torch.as_tensor(targets, device=dev).unsqueeze(1)
    t = rows.gather(1, tgt)
    # Rank = others not strictly below the target; "not below" also catches NaN scores.
    below = count_below(rows, t)
    rank = rows.shape[1] - 1 - below
    keep = mask_col != targets[mask_row]  # the target itself is never masked out
    mr = torch.as_tensor(mask_row[keep], device=dev)
    flat = torch.as_tensor(mask_row[keep] * rows.shape[1] + mask_col[keep], device=dev)
    # Masked items were counted as "not below" above when they are; take those back out.
    counted = ~(rows.reshape(-1).index_select(0, flat) < t.reshape(-1).index_select(0, mr))
    rank.index_add_(0, mr, counted.to(torch.int64), alpha=-1)
    return rank.cpu()


def count_below(scores: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """int64 [n]: how many entries of each row of ``scores`` [n, m] are strictly below ``t`` [n, 1].

    Summing a bool matrix is ~6x slower in PyTorch than the comparison itself (no vectorised bool
    reduction), which would make counting cost more than the matrix multiply. So the 0/1 bytes are
    summed eight at a time as int64 words: adding at most 255 words keeps each byte lane below 256
    (no carry between lanes), and the lanes' bytes are added at the end.
    """
    n, m = scores.shape
    words = -(-m // 8)
    per_lane = -(-words // 255)  # words left in each row after summing groups of <= 255
    groups = -(-words // per_lane)
    width = groups * per_lane * 8
    below = torch.empty(n, width, dtype=torch.bool, device=scores.device)
    below[:, m:] = False
    torch.lt(scores, t, out=below[:, :m])
    lanes = below.view(torch.int64).view(n, groups, per_lane).sum(dim=1)
    return lanes.view(torch.uint8).view(n, per_lane, 8).sum(dim=(1, 2), dtype=torch.int64)


def _is_identity(row_local: np.ndarray, n: int) -> bool:
    return len(row_local) == n and bool(np.array_equal(row_local, np.arange(n)))


def sampled_ranks(scores: torch.Tensor, row_local: np.ndarray, targets: np.ndarray,
                  negatives: np.ndarray) -> torch.Tensor:
    """int64 [n] rank of each held-out row among its sampled negatives [n, C-1] (ties count against)."""
    dev = scores.device
    r = torch.as_tensor(row_local, device=dev)
    t = scores[r, torch.as_tensor(targets, device=dev)].unsqueeze(1)
    neg = scores[r.unsqueeze(1), torch.as_tensor(negatives, device=dev)]
    return torch.count_nonzero(~(neg < t), dim=1).cpu()


def draw_negatives(num_items: int, targets: np.ndarray, mask_row: np.ndarray, mask_col: np.ndarray,
                   count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` uniform draws with replacement per row from items that are neither masked nor the target.

    Returns (negatives int64 [n, count], ok bool [n]); rows with no allowed item have ok=False.
    Exact (no rejection loop): the j-th allowed item is found by a search in the allowed prefix counts.
    """
    n = len(targets)
    allowed = torch.ones(n, num_items, dtype=torch.bool)
    allowed[torch.as_tensor(mask_row), torch.as_tensor(mask_col)] = False
    allowed[torch.arange(n), torch.as_tensor(targets)] = False
    prefix = torch.cumsum(allowed, dim=1, dtype=torch.int64)
    num_allowed = prefix[:, -1].numpy()
    ok = num_allowed > 0
    pick = np.floor(rng.random((n, count)) * np.maximum(num_allowed, 1)[:, None]).astype(np.int64)
    pick = np.minimum(pick, np.maximum(num_allowed - 1, 0)[:, None])
    neg = torch.searchsorted(prefix, torch.as_tensor(pick + 1), side="left").numpy()
    return np.minimum(neg, num_items - 1), ok


@dataclass
class Part:
    """One protocol's local results: metric names, fixed-point sums, user count, row ranks."""

    names: list[str]
    sums: torch.Tensor
    count: int
    ranks: torch.Tensor  # int64 [n rows of the split]; 0 for rows other ranks own, -1 if left out


def _full_part(scorer: Scorer, hold: Holdout, masks: Masks, cfg: EvalConfig, ctx: DistContext,
               sharded: bool = False) -> Part:
    # Chunks are cut from the global user list and then dealt out, so a user is scored in the same
    # chunk (same matrix-multiply shape, same floating-point result) for any world size.
    n = len(hold.users)
    mine = shard(-(-n // cfg.user_chunk), ctx.rank, ctx.world_size)
    lo, hi = min(mine.start * cfg.user_chunk, n), min(mine.stop * cfg.user_chunk, n)
    if sharded:  # dist.sharding=users: the split holds this rank's users only, all of them scored here
        lo, hi = 0, n
    all_ranks = torch.zeros(len(hold.items), dtype=torch.int64)
    values = []
    for c0 in range(lo, hi, cfg.user_chunk):
        c1 = min(c0 + cfg.user_chunk, hi)
        rows, row_local = _row_owners(hold, c0, c1)
        ranks = _rank_chunk(scorer, hold.users[c0:c1], row_local, hold.items[rows], masks)
        all_ranks[rows] = ranks
        values.append(metrics.per_user_values(ranks, torch.as_tensor(row_local), c1 - c0, cfg.ks))
    return _part(metrics.metric_names(cfg.ks), values, hi - lo, all_ranks, len(cfg.ks))


def _rank_chunk(scorer: Scorer, users: np.ndarray, row_local: np.ndarray, targets: np.ndarray,
                masks: Masks) -> torch.Tensor:
    """Full-protocol ranks of one chunk; its score matrix is freed on return (one chunk alive at a time)."""
    mask_row, mask_col = masks.pairs(users[row_local])
    with torch.no_grad():
        scores = scorer.scores(torch.as_tensor(users))
        return full_ranks(scores, row_local, targets, mask_row, mask_col)


def _part(names: list[str], values: list[torch.Tensor], count: int, ranks: torch.Tensor, num_ks: int) -> Part:
    if values:
        sums = metrics.fixed_point_sums(torch.cat(values))
    else:
        sums = torch.zeros(3 * num_ks + 1, dtype=torch.int64)
    return Part(names, sums, count, ranks)


def sampled_users(hold: Holdout, cfg: EvalConfig) -> np.ndarray:
    """Positions (into ``hold.users``) of the fixed user subset of the sampled protocol, ascending."""
    n = len(hold.users)
    if cfg.sampled_num_users is None or cfg.sampled_num_users >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([cfg.sampled_seed, 0x5EED])
    return np.sort(rng.choice(n, size=cfg.sampled_num_users, replace=False)).astype(np.int64)


def _sampled_part(scorer: Scorer, hold: Holdout, masks: Masks, cfg: EvalConfig, ctx: DistContext,
                  candidates: int) -> Part:
    # Fixed blocks of the fixed user subset, each with its own seed, are dealt out to ranks: the
    # negatives a user gets never depend on the world size.
    subset = sampled_users(hold, cfg)
    blocks = [subset[i:i + SAMPLED_BLOCK] for i in range(0, len(subset), SAMPLED_BLOCK)]
    mine = shard(len(blocks), ctx.rank, ctx.world_size)
    all_ranks = torch.zeros(len(hold.items), dtype=torch.int64)
    values, count = [], 0
    for b in range(mine.start, mine.stop):
        rows = np.concatenate([np.arange(hold.row_ptr[p], hold.row_ptr[p + 1]) for p in blocks[b]])
        row_local = np.searchsorted(hold.row_ptr, rows, side="right") - 1
        row_local = np.searchsorted(blocks[b], row_local)
        rng = np.random.default_rng([cfg.sampled_seed, candidates, b])
        ranks = _sampled_block(scorer, hold.users[blocks[b]], row_local, hold.items[rows], masks,
                               candidates, rng)
        all_ranks[rows] = ranks
        ok = (ranks >= 0).numpy()  # rows whose user has no book left to draw are left out
        users_ok = np.unique(row_local[ok])
        values.append(metrics.per_user_values(ranks[ok], torch.as_tensor(np.searchsorted(users_ok, row_local[ok])),
                                              len(users_ok), cfg.ks))
        count += len(users_ok)
    return _part(metrics.metric_names(cfg.ks, f"/C={candidates}"), values, count, all_ranks, len(cfg.ks))


def _sampled_block(scorer: Scorer, users: np.ndarray, row_local: np.ndarray, targets: np.ndarray,
                   masks: Masks, candidates: int, rng: np.random.Generator) -> torch.Tensor:
    """Sampled-protocol ranks of one block of users (-1 for rows with nothing to draw)."""
    mask_row, mask_col = masks.pairs(users[row_local])
    negatives, ok = draw_negatives(int(scorer.num_items), targets, mask_row, mask_col, candidates - 1, rng)
    with torch.no_grad():
        ranks = sampled_ranks(scorer.scores(torch.as_tensor(users)), row_local, targets, negatives)
    ranks[torch.as_tensor(~ok)] = -1
    return ranks


def _reduce(parts: list[Part], ctx: DistContext, with_ranks: bool) -> tuple[dict[str, float], list[torch.Tensor]]:
    """One all_reduce of every part's sums and counts (and ranks when exporting); divide once."""
    pieces = []
    for part in parts:
        pieces += [part.sums, torch.tensor([part.count], dtype=torch.int64)]
        if with_ranks:
            pieces.append(part.ranks)
    flat = all_reduce_sum(torch.cat(pieces), ctx)
    out: dict[str, float] = {}
    ranks, at = [], 0
    for part in parts:
        m = len(part.sums)
        count = int(flat[at + m])
        out.update(metrics.finalize(flat[at:at + m], count, part.names))
        suffix = part.names[-1][len("mrr"):]
        out[f"num_users{suffix}"] = float(count)
        at += m + 1
        if with_ranks:
            ranks.append(flat[at:at + len(part.ranks)])
            at += len(part.ranks)
    return out, ranks


def evaluate_scorer(scorer: Scorer, bundle: Bundle, split: str, cfg: EvalConfig, ctx: DistContext,
                    per_user_path: Path | None = None, popularity_groups: int = 0) -> dict[str, Any]:
    """Metrics of ``scorer`` on the held-out ``split``; the same dict on every rank.

    ``val``/``test``: every item ranked, training items masked. ``cold_val``/``cold_test``: each
    user's held-out cold items ranked against every cold item. ``cold_user_val``/``cold_user_test``:
    ``scorer`` must come from ``split_scorer`` (scores from the given history, which is masked).

    Full protocol: ``hit@K``, ``ndcg@K``, ``recall@K`` for K in ``cfg.ks``, ``mrr``, ``num_users``.
    Sampled protocol: the same keys with ``/C=<candidates>`` appended, for each of
    ``cfg.sampled_candidates``. With ``per_user_path``, rank 0 writes (user, book, rank) per
    held-out row as CSV (atomically), then all ranks meet at a barrier. With ``popularity_groups``
    (full protocol, ``val``/``test``), ``by_popularity`` holds the metrics per group of held-out
    items by training popularity (:mod:`graphrec_dist.breakdown`).
    """
    if split not in OTHER_SPLIT:
        raise ConfigError(f"evaluation split must be one of {', '.join(OTHER_SPLIT)}, got {split!r}")
    if int(scorer.num_items) != bundle.num_books:  # e.g. a checkpoint evaluated on another bundle
        raise DataError(f"the model scores {scorer.num_items} books but the bundle at "
                        f"{bundle.path or '(in memory)'} has {bundle.num_books}")
    if split not in ("val", "test"):
        _check_inductive(bundle, split, cfg)
    if bundle.shard is not None and (popularity_groups or per_user_path is not None or cfg.protocol != "full"):
        raise ConfigError("a user-sharded bundle is evaluated with the full protocol only, without per-user "
                          "rows or a popularity breakdown: evaluate the finished run (graphrec-dist evaluate "
                          "--run DIR reassembles it)")
    if popularity_groups and (split not in ("val", "test") or cfg.protocol != "full"):
        raise ConfigError(f"a breakdown by popularity needs the full protocol on val or test, "
                          f"not the {cfg.protocol} protocol on {split}")
    start = time.perf_counter()
    hold = Holdout.from_pairs(bundle.split(split))
    masks = Masks.for_split(bundle, split, cfg)
    if split in COLD_ITEM_SPLITS:
        candidates = bundle.cold_items.numpy()
        scorer = CandidateScorer(scorer, candidates)
        hold = Holdout(hold.users, hold.row_ptr, np.searchsorted(candidates, hold.items))
    if cfg.protocol == "full":
        parts = [_full_part(scorer, hold, masks, cfg, ctx, sharded=bundle.shard is not None)]
    else:
        parts = [_sampled_part(scorer, hold, masks, cfg, ctx, c) for c in cfg.sampled_candidates]
    result: dict[str, Any]
    result, ranks = _reduce(parts, ctx, with_ranks=per_user_path is not None or popularity_groups > 0)
    if popularity_groups:
        result["by_popularity"] = by_popularity(ranks[0], hold.items, bundle.train[:, 1].numpy(), bundle.num_books,
                                                popularity_groups, cfg.ks)
    if per_user_path is not None:
        if ctx.is_main:
            if split in COLD_ITEM_SPLITS:  # positions among the cold items back to item indices
                hold = Holdout(hold.users, hold.row_ptr, bundle.cold_items.numpy()[hold.items])
            write_per_user(per_user_path, bundle, hold, parts, ranks)
        barrier(ctx)
    log.info("evaluated %s (%s protocol) on %d users in %.1f s", split, cfg.protocol,
             len(hold.users), time.perf_counter() - start)
    return result


def evaluate_model(model, bundle: Bundle, split: str, cfg: EvalConfig, ctx: DistContext,
                   per_user_path: Path | None = None, popularity_groups: int = 0) -> dict[str, Any]:
    """Metrics of ``model`` on ``split``: its scorer for the split (:func:`split_scorer`), then
    :func:`evaluate_scorer`; every rank takes part."""
    model.eval()
    return evaluate_scorer(split_scorer(model, bundle, split, ctx, cfg), bundle, split, cfg, ctx, per_user_path,
                           popularity_groups)


def _check_inductive(bundle: Bundle, split: str, cfg: EvalConfig) -> None:
    """The inductive splits need a bundle built with them, and the full protocol."""
    knob = "cold_items" if split in COLD_ITEM_SPLITS else "cold_users"
    if len(bundle.split(split)) == 0:
        raise ConfigError(f"split {split!r} is empty: build the bundle with data.split.{knob} > 0 "
                          f"(docs/EVALUATION.md)")
    if cfg.protocol != "full":
        raise ConfigError(f"split {split!r} is evaluated with eval.protocol=full only")


def write_per_user(path: str | Path, bundle: Bundle, hold: Holdout, parts: list[Part],
                   ranks: list[torch.Tensor]) -> None:
    """CSV: user, book (indices), original ids when the bundle has them, one rank column per part."""
    row_users = np.repeat(hold.users, np.diff(hold.row_ptr))
    frame = pd.DataFrame({"user": row_users, "book": hold.items})
    if "user_id" in bundle.users.columns and len(bundle.users) == bundle.num_users:
        frame["user_id"] = bundle.users["user_id"].to_numpy()[row_users]
    if "book_id" in bundle.books.columns and len(bundle.books) == bundle.num_books:
        frame["book_id"] = bundle.books["book_id"].to_numpy()[hold.items]
    for part, r in zip(parts, ranks):
        frame["rank" + part.names[-1][len("mrr"):].replace("/", "_")] = r.numpy()
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def build_parser() -> argparse.ArgumentParser:
    """Options of ``graphrec-dist evaluate``."""
    parser = argparse.ArgumentParser(prog="graphrec-dist evaluate",
                                     description="Evaluate a trained run or checkpoint; prints metrics as JSON.")
    source = parser.add_mutually_exclusive_group(required=True)
    # --run-dir: torchrun's own parser takes a bare --run for an abbreviation of its --run-path.
    source.add_argument("--run", "--run-dir", dest="run", help="run directory (its best checkpoint is used)")
    source.add_argument("--checkpoint", help="checkpoint file")
    parser.add_argument("--split", choices=sorted(OTHER_SPLIT), default="test")
    parser.add_argument("--per-user", default=None,
                        help="write (user, book, rank) per held-out row to this CSV "
                             "(default with eval.export_per_user=true: beside the run)")
    parser.add_argument("--by-popularity", type=int, default=0, metavar="N",
                        help="also report the metrics in N groups of held-out items by their number of "
                             "training interactions (about equal groups; full protocol, val or test)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. eval.protocol=sampled")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``graphrec-dist evaluate``: load the model, evaluate on every rank, print JSON on rank 0."""
    args = parse_args(build_parser(), argv)
    if args.by_popularity < 0:
        raise ConfigError(f"--by-popularity: expected a number of groups >= 1 (0 = none), got {args.by_popularity}")
    source = Path(args.run or args.checkpoint)
    cfg, model, bundle = load_run(source, list(args.overrides))
    per_user = Path(args.per_user) if args.per_user else None
    if per_user is None and cfg.eval.export_per_user:
        per_user = (source if source.is_dir() else source.parent) / f"per_user_{args.split}.csv"
    ctx = init_distributed(cfg.dist.backend, cfg.dist.device)
    setup_logging(ctx.rank, cfg.run.log_level)
    model.to(ctx.device)  # read onto the CPU; each rank's inference runs on its device (NCCL gathers there)
    try:
        result = evaluate_model(model, bundle, args.split, cfg.eval, ctx, per_user, args.by_popularity)
        if ctx.is_main:
            print(json.dumps({"split": args.split, "protocol": cfg.eval.protocol, **result}, indent=2))
        return result
    finally:
        cleanup(ctx)


if __name__ == "__main__":
    from graphrec_dist.cli import run_command

    sys.exit(run_command("evaluate", sys.argv[1:]))
