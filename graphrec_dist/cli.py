"""``graphrec-dist``: one console script; each subcommand is the ``main(argv)`` of one module.

Subcommand modules are imported only when called, so ``--help`` is fast and a missing optional
dependency (Ray) only matters to the command that needs it.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from graphrec_dist.errors import UserError

# name -> (module with main(argv), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("graphrec_dist.data.cli", "download Goodbooks-10k, generate Goodbooks-shaped data, build Graph3 bundles"),
    "train": ("graphrec_dist.train", "train a model (one process, torchrun DDP, or --launcher ray)"),
    "tune": ("graphrec_dist.tune", "choose a model's settings on the validation split of your data (a grid)"),
    "evaluate": ("graphrec_dist.evaluate", "full-ranking (or sampled) evaluation of a run or checkpoint"),
    "recommend": ("graphrec_dist.recommend", "print a user's top-k items next to their history"),
    "export": ("graphrec_dist.export", "write embeddings and every user's top-k (Parquet) of a trained run"),
    "serve": ("graphrec_dist.serve", "answer recommendations over HTTP (JSON) from a trained run"),
    "bench": ("graphrec_dist.benchmarks.cli",
              "measure speed, memory and quality; write JSON, plots and docs/RESULTS.md"),
}


# ``section.key=value`` (sections may nest: ``data.split.seed=3``): what a config override looks like.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphrec-dist",
        description="Distributed heterogeneous-graph GNN recommender (Graph3 over Goodbooks-10k).",
        epilog="Run 'graphrec-dist COMMAND --help' for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def run_command(name: str, argv: list[str]) -> int:
    """Run one subcommand; user errors print one clear line and give exit code 2."""
    module_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            print(f"graphrec-dist {name}: not implemented yet", file=sys.stderr)
            return 1
        raise
    try:
        result: Any = module.main(argv)
    except UserError as exc:
        print(f"graphrec-dist {name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help or a usage error (exit 0 / 2)
        return 2
    return run_command(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
