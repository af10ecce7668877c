"""Raw files -> cached bundle directory -> :class:`Bundle`, skipping work that is already done.

The cache key is the recipe (every DataConfig field that changes the graph, plus the source spec)
and the sha256 of every input file; a valid bundle is reused unless ``force``. A bundle whose
meta.json is garbled is a DataError (exit 2) unless ``force``. Writes go to a temporary directory
renamed into place, so a crash leaves either the old bundle or none.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphrec_dist.config import DataConfig
from graphrec_dist.data import synth
from graphrec_dist.data.build import build_arrays, input_files
from graphrec_dist.data.bundle import Bundle
from graphrec_dist.data.sources import file_sha256, find_file
from graphrec_dist.data.spec import SourceSpec, goodbooks_spec, load_spec
from graphrec_dist.data.store import SCHEMA_VERSION, load_bundle, read_meta, read_meta_strict, write_bundle_dir
from graphrec_dist.io_utils import atomic_dir
from graphrec_dist.logging_utils import get_logger

# DataConfig fields that only say where inputs come from: they reach the cache key through the
# input checksums, not the recipe.
_NOT_RECIPE = {"source", "raw_dir", "bundle_dir", "synth_users", "synth_seed", "books_from", "csv_spec"}

log = get_logger("data")


def source_spec(cfg: DataConfig) -> SourceSpec:
    """The files and columns for ``cfg.source``: the Goodbooks preset, or the csv_spec YAML."""
    if cfg.source == "csv":
        return load_spec(cfg.csv_spec)
    return goodbooks_spec()


def recipe(cfg: DataConfig, spec: SourceSpec) -> dict[str, Any]:
    """Everything that decides the graph given the input bytes."""
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_RECIPE}
    return {"config": fields, "spec": dataclasses.asdict(spec)}


def recipe_hash(rec: dict[str, Any]) -> str:
    blob = json.dumps(rec, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def input_checksums(files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return {name: {"file": p.name, "bytes": p.stat().st_size, "sha256": file_sha256(p)}
            for name, p in sorted(files.items())}


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``target``'s parent directory, so that two processes preparing
    the same directory take turns and the second finds the first one's result. Locking the
    directory itself writes no lock file (bad input must leave nothing behind)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@dataclass
class BuildPlan:
    """What a build of one bundle directory needs, found under its lock."""

    raw_dir: Path
    out: Path
    spec: SourceSpec
    recipe: dict[str, Any]
    key: str
    checksums: dict[str, dict[str, Any]]
    current: bool  # a valid cached bundle is there (and ``force`` was not given)

    def meta(self, cfg: DataConfig, counts: dict[str, Any]) -> dict[str, Any]:
        """The bundle's meta.json for ``counts`` (``BuiltGraph.counts``)."""
        return {"schema_version": SCHEMA_VERSION, "source": cfg.source, "recipe": self.recipe,
                "recipe_hash": self.key, "inputs": self.checksums, "counts": counts,
                "item_label": self.spec.items.label}


@contextlib.contextmanager
def build_lock(cfg: DataConfig, raw_dir: str | Path | None = None, out: str | Path | None = None,
               force: bool = False) -> Iterator[BuildPlan]:
    """Hold the bundle directory's lock and yield its :class:`BuildPlan` (cache key, checksums and
    whether the cached bundle is current)."""
    raw_dir = Path(raw_dir if raw_dir is not None else cfg.raw_dir)
    out = Path(out if out is not None else cfg.bundle_dir)
    spec = source_spec(cfg)
    rec = recipe(cfg, spec)
    key = recipe_hash(rec)
    with _locked(out):
        checksums = input_checksums(input_files(raw_dir, spec))
        # A garbled meta.json stops here (exit 2) unless ``force``: rebuilding would replace a
        # bundle nobody can identify any more, which a run's checkpoints may have been trained on.
        old = read_meta_strict(out) if not force and (out / "meta.json").exists() else read_meta(out)
        current = (not force and old is not None and old.get("schema_version") == SCHEMA_VERSION
                   and old.get("recipe_hash") == key and old.get("inputs") == checksums)
        yield BuildPlan(raw_dir, out, spec, rec, key, checksums, current)


def build_bundle(cfg: DataConfig, raw_dir: str | Path | None = None, out: str | Path | None = None,
                 force: bool = False) -> tuple[Path, bool]:
    """Build Graph3 from ``raw_dir`` into ``out`` unless a valid cached bundle is there.

    Returns (bundle path, built) where ``built`` is False on a cache hit.
    """
    with build_lock(cfg, raw_dir, out, force) as plan:
        if plan.current:
            log.info("bundle %s is up to date (cache hit)", plan.out)
            return plan.out, False
        log.info("building Graph3 from %s into %s", plan.raw_dir, plan.out)
        built = build_arrays(plan.raw_dir, plan.spec, cfg)
        with atomic_dir(plan.out) as tmp:
            write_bundle_dir(tmp, built.edges, built.splits, built.books, built.users, built.vocab,
                             plan.meta(cfg, built.counts()))
    return plan.out, True


def ensure_synth(cfg: DataConfig) -> None:
    """Generate the Goodbooks-shaped files into ``cfg.raw_dir`` when they are missing or stale.

    Stale means the generator stamp (users, seed, books_from, version) differs from the config; a
    raw_dir with a ratings file but no stamp holds someone's own files and is left alone.
    """
    raw = Path(cfg.raw_dir)
    wanted = synth.stamp_for(cfg.synth_users, cfg.synth_seed, cfg.books_from)
    with _locked(raw):
        stamp = synth.read_stamp(raw)
        if find_file(raw, "ratings", required=False) is not None and (stamp is None or stamp == wanted):
            return
        log.info("generating %d synthetic users into %s", cfg.synth_users, raw)
        synth.generate(raw, users=cfg.synth_users, seed=cfg.synth_seed, books_from=cfg.books_from)


def ensure_bundle(cfg: DataConfig, force: bool = False) -> Path:
    """Make sure the bundle for ``cfg`` exists and is current; its path (call on one rank only)."""
    if cfg.source == "synth":
        ensure_synth(cfg)
    return build_bundle(cfg, force=force)[0]


def prepare_bundle(cfg: DataConfig, force: bool = False) -> Bundle:
    """Make sure the bundle for ``cfg`` exists and is current, then load it (call on one rank only)."""
    return load_bundle(ensure_bundle(cfg, force))
