"""Benchmark of the data layer: seconds and peak RSS of generating and building at a given scale.

Each step runs in a fresh Python process so that its peak RSS is its own::

    python -m graphrec_dist.benchmarks.data_build --users 53424 \
        --books-from ../shared/data/goodbooks-10k --work /tmp/bench
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _step(name: str, raw: str, bundle: str, users: int, seed: int, books_from: str | None) -> dict[str, Any]:
    """One step in this process: synth, build (forced) or load; seconds and peak RSS.

    Each step imports only what it uses, here rather than at the top: a step runs in a child of its
    own, and its peak RSS should not hold the modules of the other steps."""
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    if name == "synth":
        from graphrec_dist.data.synth import generate

        generate(raw, users=users, seed=seed, books_from=books_from)
        seconds, rss = time.perf_counter() - t0, _peak_rss_mb()
        return {"seconds": round(seconds, 2), "peak_rss_mb": round(rss, 1), "marginals": marginals(raw)}
    elif name == "build":
        from graphrec_dist.config import DataConfig
        from graphrec_dist.data.prepare import build_bundle

        path, _ = build_bundle(DataConfig(source="goodbooks"), raw, bundle, force=True)
        info["counts"] = json.loads((path / "meta.json").read_text())["counts"]
    elif name == "load":
        from graphrec_dist.data.store import load_bundle

        load_bundle(bundle)
    else:
        raise ValueError(f"unknown step {name!r}")
    return {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(_peak_rss_mb(), 1), **info}


def marginals(raw_dir: str | Path) -> dict[str, Any]:
    """Goodbooks-style marginals of a raw directory: sizes, activity, popularity, rating shares."""
    import numpy as np
    import pandas as pd
    from scipy.stats import spearmanr

    from graphrec_dist.data.sources import find_file

    ratings = pd.read_csv(find_file(raw_dir, "ratings"))
    to_read = pd.read_csv(find_file(raw_dir, "to_read"))
    books = pd.read_csv(find_file(raw_dir, "books"), usecols=["book_id", "ratings_count"])
    per_user = ratings.groupby("user_id").size()
    per_book = ratings.groupby("book_id").size().reindex(books["book_id"], fill_value=0)
    shares = ratings["rating"].value_counts(normalize=True).sort_index()
    return {"ratings": len(ratings), "to_read": len(to_read), "users": int(per_user.size),
            "users_with_to_read": int(to_read["user_id"].nunique()),
            "ratings_per_user": {"mean": round(float(per_user.mean()), 2), "min": int(per_user.min()),
                                 "max": int(per_user.max())},
            "ratings_per_book": {"mean": round(float(per_book.mean()), 1), "median": float(per_book.median()),
                                 "min": int(per_book.min()), "max": int(per_book.max())},
            "spearman_book_count_vs_ratings_count": round(float(
                spearmanr(per_book.to_numpy(), books["ratings_count"].to_numpy()).correlation), 3),
            "rating_shares": {int(k): round(float(v), 3) for k, v in shares.items()},
            "books": int(np.asarray(books["book_id"]).size)}


def bench_build(users: int = 53424, work_dir: str | Path = "bench_data", books_from: str | None = None,
                seed: int = 0, steps: tuple[str, ...] = ("synth", "build", "load")) -> dict[str, Any]:
    """Time and peak RSS of each step in its own process: {"synth": {...}, "build": {...}, "load": {...}}."""
    work = Path(work_dir)
    raw, bundle = str(work / f"raw-{users}"), str(work / f"bundle-{users}")
    out: dict[str, Any] = {"users": users, "books_from": books_from, "seed": seed}
    for name in steps:
        cmd = [sys.executable, "-m", "graphrec_dist.benchmarks.data_build", "--step", name, "--users", str(users),
               "--seed", str(seed), "--raw", raw, "--bundle", bundle]
        if books_from is not None:
            cmd += ["--books-from", str(books_from)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"data bench step {name} failed:\n{proc.stderr[-2000:]}")
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m graphrec_dist.benchmarks.data_build",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=53424)
    parser.add_argument("--books-from", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="bench_data", help="directory for the raw files and the bundle")
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--raw", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bundle", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step is not None:
        result = _step(args.step, args.raw, args.bundle, args.users, args.seed, args.books_from)
    else:
        result = bench_build(args.users, args.work, args.books_from, args.seed)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
