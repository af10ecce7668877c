"""``data build --partitions N`` without holding the interactions: a streamed, partitioned build.

The interaction files are read in chunks and spilled to temporary bucket files
(:mod:`graphrec_dist.data.stream_rows`); the k-core filter and the id remap need per-user and
per-item counts only. Leave-one-out's random picks depend on the per-user counts only
(:func:`interactions.held_out_positions`), so they are drawn once, from today's single generator,
before any partition is cut. Then one user partition at a time is gathered from the buckets, split,
and written: its ``partitions/<N>/<p>/`` files and its slice of the bundle's whole user-side files
(``user__rates__book``, ``book__rev_rates__user``, ``splits/{train,val,test}.npy``), written in
place at their offsets (:class:`store.NpyWriter`). The item side is built once, as today. Peak
memory is one partition plus the item side and O(users + items) counts.

The bundle is the in-memory build's, byte for byte, plus its partitions, which equal
``write_partitions(load_bundle(...), N)``'s (tests/test_partition_build.py): every reader of a
bundle (a replicated run, ``evaluate``, ``export``) works on it unchanged, and the cache key is the
same. Inputs this path does not handle (a timestamp order, a users file, the inductive protocols)
take the in-memory path, and the result says so.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from graphrec_dist.config import DataConfig
from graphrec_dist.data import interactions as inter
from graphrec_dist.data.build import check_columns, input_files, item_side, no_rows_error
from graphrec_dist.data.bundle import COLD_SPLITS, RATES, REV_RATES, edge_key
from graphrec_dist.data.partition import (
    PARTITIONS,
    UserShard,
    partition_counts,
    user_block,
    write_part_arrays,
    write_part_shard,
    write_partitions,
)
from graphrec_dist.data.prepare import BuildPlan, build_bundle, build_lock, source_spec
from graphrec_dist.data.spec import SourceSpec
from graphrec_dist.data.store import SPLITS, NpyWriter, load_bundle, read_meta_strict, write_bundle_dir
from graphrec_dist.data.stream_rows import KeptRows, stream_rows
from graphrec_dist.errors import ConfigError, DataError
from graphrec_dist.io_utils import atomic_dir
from graphrec_dist.logging_utils import get_logger

CHUNK_ROWS = 1 << 21  # rows per chunk read (~2M: tens of MB at a time)
BUCKETS_PER_PARTITION = 4  # a partition is gathered from ~4 bucket files, one held at a time

log = get_logger("data")


@dataclass
class PartitionedBuild:
    """What ``build_partitioned`` did: the bundle, whether it wrote anything, and how."""

    path: Path
    built: bool  # the bundle was (re)built
    wrote_partitions: bool
    how: str  # "streamed", or "in memory (<reason>)"


def why_not_streamed(cfg: DataConfig, spec: SourceSpec) -> str | None:
    """Why the streamed build cannot make this bundle (then it is built in memory), or None."""
    if spec.interactions.timestamp or (spec.extra_interactions is not None and spec.extra_interactions.timestamp):
        return "rows ordered by a timestamp column"
    if spec.users is not None:
        return "a users file's relations"
    if cfg.split.cold_items > 0 or cfg.split.cold_users > 0:
        return "the inductive protocols (data.split.cold_items / cold_users)"
    return None


def build_partitioned(cfg: DataConfig, n: int, force: bool = False, chunk_rows: int = CHUNK_ROWS) -> PartitionedBuild:
    """Make sure the bundle for ``cfg`` exists with ``n`` user partitions, streamed when it can be.

    A current bundle without the ``n`` partitions gets them from a streamed pass over its inputs
    (the whole bundle is never loaded); otherwise the bundle and its partitions are built together.
    """
    if n < 1:
        raise ConfigError(f"--partitions: expected a positive number of user partitions, got {n}")
    reason = why_not_streamed(cfg, source_spec(cfg))
    if reason is not None:
        path, built = build_bundle(cfg, force=force)
        missing = n not in partition_counts(path)
        if missing:
            write_partitions(load_bundle(path), n)
        return PartitionedBuild(path, built, missing, f"in memory (the streamed build does not handle {reason})")
    with build_lock(cfg, force=force) as plan:
        if plan.current and n in partition_counts(plan.out):
            return PartitionedBuild(plan.out, False, False, "streamed")
        with tempfile.TemporaryDirectory(prefix=f".{plan.out.name}.rows.", dir=plan.out.parent) as work:
            if plan.current:
                log.info("streaming %d user partitions of %s", n, plan.out)
                with atomic_dir(plan.out / PARTITIONS / str(n)) as tmp:
                    _stream(plan, cfg, n, Path(work), tmp, None, chunk_rows)
            else:
                log.info("streaming Graph3 from %s into %s with %d user partitions", plan.raw_dir, plan.out, n)
                with atomic_dir(plan.out) as tmp:
                    _stream(plan, cfg, n, Path(work), tmp / PARTITIONS / str(n), tmp, chunk_rows)
    return PartitionedBuild(plan.out, not plan.current, True, "streamed")


class _WholeUserSide:
    """The bundle's whole user-side files, filled one partition's slice at a time."""

    def __init__(self, root: Path, n_train: int, n_held: int) -> None:
        graph, splits = root / "graph", root / "splits"
        self.n_train = n_train
        self.files = {name: NpyWriter(graph / f"{edge_key(et)}.{name[1]}.npy", shape, dtype)
                      for et in (RATES, REV_RATES)
                      for name, shape, dtype in (((et, "edge_index"), (2, n_train), np.int64),
                                                 ((et, "edge_weight"), (n_train,), np.float32))}
        for split, n in (("train", n_train), ("val", n_held), ("test", n_held)):
            self.files[split] = NpyWriter(splits / f"{split}.npy", (n, 2), np.int64)

    def add(self, train: np.ndarray, val: np.ndarray, test: np.ndarray, train_off: int, held_off: int) -> None:
        """Global (user, book) pairs of one partition at its offsets in the whole arrays."""
        ones = np.ones(len(train), dtype=np.float32)
        for et, (src, dst) in ((RATES, (0, 1)), (REV_RATES, (1, 0))):
            self.files[(et, "edge_index")].write(train_off, train[:, src])
            self.files[(et, "edge_index")].write(self.n_train + train_off, train[:, dst])
            self.files[(et, "edge_weight")].write(train_off, ones)
        self.files["train"].write(2 * train_off, train)
        self.files["val"].write(2 * held_off, val)
        self.files["test"].write(2 * held_off, test)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def _stream(plan: BuildPlan, cfg: DataConfig, n: int, work: Path, part_root: Path, whole: Path | None,
            chunk_rows: int) -> None:
    """Write ``n`` partitions into ``part_root`` and, when ``whole`` is given, the bundle there."""
    plan.spec.side_node_types()
    files = input_files(plan.raw_dir, plan.spec)
    check_columns(files, plan.spec)
    kept = stream_rows(files, plan.spec, cfg.min_rating, cfg.min_user_interactions, cfg.min_book_interactions,
                       work, BUCKETS_PER_PARTITION * n, chunk_rows)
    if kept.num_rows == 0:
        raise no_rows_error(files["interactions"], cfg)
    sc = cfg.split
    picks = inter.held_out_positions(kept.user_counts, sc.mode, sc.seed, sc.min_interactions)
    n_train, n_held = kept.num_rows - 2 * len(picks[0]), len(picks[0])
    side = item_side(files, plan.spec, cfg, kept.book_ids, kept.user_ids) if whole is not None else None
    writer = _WholeUserSide(whole, n_train, n_held) if whole is not None else None
    book_counts = np.zeros(len(kept.book_ids), dtype=np.int64)
    offsets = [0]
    try:
        for p in range(n):
            offsets.append(offsets[-1] + _write_partition(kept, user_block(len(kept.user_ids), p, n), picks,
                                                          part_root / str(p), writer, offsets[-1], book_counts))
    finally:
        if writer is not None:
            writer.close()
    if offsets[-1] != n_train:
        raise RuntimeError(f"streamed build: {offsets[-1]} training pairs written, {n_train} expected")
    _write_shards(part_root, n, len(kept.user_ids), offsets, book_counts)
    counts = {"num_users": len(kept.user_ids), "num_books": len(kept.book_ids), "train": n_train, "held": n_held}
    if side is None:
        _check_against_bundle(plan.out, counts)
        return
    meta_counts = side.counts()
    meta_counts["num_edges"].update({edge_key(RATES): n_train, edge_key(REV_RATES): n_train})
    meta_counts["num_edges"] = dict(sorted(meta_counts["num_edges"].items()))
    meta_counts["splits"] = {"train": n_train, "val": n_held, "test": n_held}
    write_bundle_dir(whole, side.edges, side.splits, side.books, side.users, side.vocab,
                     plan.meta(cfg, meta_counts), on_disk=SPLITS)


def _write_partition(kept: KeptRows, block: slice, picks: tuple[np.ndarray, ...], out: Path,
                     writer: _WholeUserSide | None, train_off: int, book_counts: np.ndarray) -> int:
    """Split and write the users ``block``; add its books to ``book_counts``; its training pairs."""
    users, books = kept.rows_of(block.start, block.stop)
    eligible, test_pos, val_pos = picks
    lo, hi = np.searchsorted(eligible, [block.start, block.stop])
    train_rows, val_rows, test_rows = inter.split_rows(
        users, np.bincount(users, minlength=block.stop - block.start), eligible[lo:hi] - block.start,
        test_pos[lo:hi], val_pos[lo:hi])
    stacked = np.stack([users, books], axis=1)
    del users, books
    train = stacked[train_rows]
    train = train[np.lexsort((train[:, 1], train[:, 0]))]
    val, test = stacked[val_rows], stacked[test_rows]
    del stacked, train_rows
    ones = np.ones(len(train), dtype=np.float32)
    edges = {RATES: (np.stack([train[:, 0], train[:, 1]]), ones),
             REV_RATES: (np.stack([train[:, 1], train[:, 0]]), ones)}
    splits = {"train": train, "val": val, "test": test}
    splits.update({name: np.zeros((0, 2), dtype=np.int64) for name in COLD_SPLITS})
    write_part_arrays(out, edges, splits, pd.DataFrame({"user_id": kept.user_ids[block]}))
    del edges
    if writer is not None:
        shift = np.array([block.start, 0], dtype=np.int64)
        writer.add(train + shift, val + shift, test + shift, train_off, int(lo))
    book_counts += np.bincount(train[:, 1], minlength=len(book_counts))
    return len(train)


def _write_shards(part_root: Path, n: int, num_users: int, offsets: list[int], book_counts: np.ndarray) -> None:
    """Every partition's shard.pt, once the global training counts per book are known."""
    counts = torch.from_numpy(book_counts)
    stats = {RATES: (counts, counts.double())}  # every training edge weighs 1
    for p in range(n):
        block = user_block(num_users, p, n)
        shard = UserShard(p, n, block.start, block.stop, num_users, offsets[-1],
                          torch.arange(offsets[p], offsets[p + 1], dtype=torch.int64), counts, stats)
        write_part_shard(part_root / str(p), shard)


def _check_against_bundle(path: Path, counts: dict[str, int]) -> None:
    """Partitions streamed for a current bundle must describe it (same inputs, same recipe)."""
    meta = read_meta_strict(path)["counts"]
    found = {"num_users": meta["num_nodes"]["user"], "num_books": meta["num_nodes"]["book"],
             "train": meta["splits"]["train"], "held": meta["splits"]["val"]}
    if found != counts:
        raise DataError(f"bundle {path}: its meta.json counts {found} but its inputs stream to {counts}; "
                        f"rebuild it with 'graphrec-dist data build ... --partitions N --force'")


__all__ = ["PartitionedBuild", "build_partitioned", "why_not_streamed"]
