"""``graphrec-dist data download|synth|build``: thin wrappers over the data layer.

Examples::

    graphrec-dist data download --out data/raw/goodbooks
    graphrec-dist data synth --out data/raw/synth-2000 --users 2000 --books-from ../shared/data/goodbooks-10k
    graphrec-dist data build --source goodbooks --raw-dir data/raw/goodbooks --out data/bundles/goodbooks
    graphrec-dist data build configs/demo.yaml data.min_rating=3 --force
    graphrec-dist data build configs/demo.yaml --partitions 4   # streamed: bundle + 4 user partitions
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphrec_dist.config import load_config, parse_args
from graphrec_dist.data.download import DEFAULT_BASE_URL, download
from graphrec_dist.data.partition import PARTITIONS, partition_counts, write_partitions
from graphrec_dist.data.prepare import build_bundle, ensure_synth
from graphrec_dist.data.store import load_bundle, read_meta
from graphrec_dist.data.stream_build import build_partitioned
from graphrec_dist.data.synth import generate
from graphrec_dist.errors import ConfigError
from graphrec_dist.logging_utils import setup_logging


@dataclass
class DataResult:
    """What a data subcommand did: the path it wrote and, for build, the counts and cache status."""

    command: str
    path: Path
    built: bool = True
    info: dict[str, Any] = field(default_factory=dict)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphrec-dist data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    dl = sub.add_parser("download", help="fetch the five Goodbooks-10k CSV files (resumes, verifies)")
    dl.add_argument("--out", required=True, help="directory for the files")
    dl.add_argument("--base-url", default=None, help="where the files are (default: the dataset's GitHub)")
    dl.add_argument("--only", nargs="+", default=None, metavar="FILE", help="fetch only these (e.g. books tags)")
    dl.add_argument("--retries", type=int, default=3)
    dl.add_argument("--no-progress", action="store_true")
    sy = sub.add_parser("synth", help="generate Goodbooks-shaped CSV files offline")
    sy.add_argument("--out", required=True)
    sy.add_argument("--users", type=int, default=2000)
    sy.add_argument("--books-from", default=None, help="copy books/tags/book_tags from this directory")
    sy.add_argument("--seed", type=int, default=0)
    bu = sub.add_parser("build", help="build the Graph3 bundle (skipped when the cache is valid)")
    bu.add_argument("config", nargs="?", default=None, help="YAML preset (its data section is used)")
    bu.add_argument("overrides", nargs="*", default=[], help="data.key=value overrides")
    bu.add_argument("--source", choices=["goodbooks", "synth", "csv"], default=None)
    bu.add_argument("--raw-dir", default=None)
    bu.add_argument("--out", default=None, help="bundle directory")
    bu.add_argument("--csv-spec", default=None, help="bring-your-own-data spec YAML (source csv)")
    bu.add_argument("--force", action="store_true", help="rebuild even when the cache is valid")
    bu.add_argument("--partitions", type=int, default=0, metavar="N",
                    help="also cut the users into N partitions for dist.sharding=users on N (or N/k) ranks; "
                         "the build then streams the interactions (peak: one partition plus the item side)")
    bu.add_argument("--in-memory", action="store_true",
                    help="with --partitions: build the whole bundle in memory and cut the partitions from it "
                         "(the path before streaming, kept for comparison)")
    return parser


def _build(args: argparse.Namespace) -> DataResult:
    if args.partitions < 0:
        raise ConfigError(f"--partitions: expected a positive number of user partitions, got {args.partitions}")
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # only overrides were given
        config, overrides = None, [config] + overrides
    flags = {"source": args.source, "raw_dir": args.raw_dir, "bundle_dir": args.out, "csv_spec": args.csv_spec}
    overrides += [f"data.{k}={v}" for k, v in flags.items() if v is not None]
    cfg = load_config(config, overrides).data
    if cfg.source == "synth":
        ensure_synth(cfg)
    if args.partitions and not args.in_memory:
        res = build_partitioned(cfg, args.partitions, force=args.force)
        path, built = res.path, res.built
        print(f"{'built' if built else 'up to date (cache hit)'} ({res.how}): {path}")
        if res.wrote_partitions:
            print(f"  user partitions: {args.partitions} in {path / PARTITIONS / str(args.partitions)}")
    else:
        path, built = build_bundle(cfg, force=args.force)
        print(f"{'built' if built else 'up to date (cache hit)'}{' (in memory)' if args.partitions else ''}: {path}")
        if args.partitions and args.partitions not in partition_counts(path):
            written = write_partitions(load_bundle(path), args.partitions)
            print(f"  user partitions: {args.partitions} in {written}")
    counts = read_meta(path)["counts"]
    for kind in ("num_nodes", "num_edges", "splits"):
        print(f"  {kind}: " + ", ".join(f"{k}={v}" for k, v in counts[kind].items()))
    return DataResult("build", path, built, counts)


def main(argv: list[str] | None = None) -> DataResult:
    """Run one data subcommand; bad input raises a UserError (the dispatcher turns it into exit 2)."""
    args = parse_args(build_parser(), list(sys.argv[1:] if argv is None else argv))
    setup_logging(0, "INFO")
    if args.action == "download":
        files = download(args.out, args.base_url or DEFAULT_BASE_URL, only=args.only, retries=args.retries,
                         progress=not args.no_progress)
        for name, path in files.items():
            print(f"{name}: {path}")
        return DataResult("download", Path(args.out), info={"files": sorted(files)})
    if args.action == "synth":
        path = generate(args.out, users=args.users, seed=args.seed, books_from=args.books_from)
        print(f"generated: {path}")
        return DataResult("synth", path)
    return _build(args)
