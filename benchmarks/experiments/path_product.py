"""The path term's three products, side by side, on a config's data and batch size.

    python benchmarks/experiments/path_product.py CONFIG [overrides ...] [--rounds 6]

The term (``model.path.relations``, default ``[co_items]`` if the config has none) scores a training batch's
distinct users over every item: forward and the values' gradient, as training does. Rounds
alternate between the CSR kernel (edges x users multiply-adds), the enumeration of history
entries' out-edges and the dense [items x items] product, so that a busy machine slows all alike.
Prints the mean milliseconds of each (fastest and slowest round dropped), the multiply-add counts
of the first two and their cost ratio per multiply-add, which is what ``PathTerm.SCATTER_COST``
stands for; the dense product's time against the kernel's, with the relations' edges / items^2, is
what ``_Relation.DENSE_RATIO`` weighs.
"""
from __future__ import annotations

import argparse
import time

import torch

from graphrec_dist.config import load_config
from graphrec_dist.data.prepare import prepare_bundle
from graphrec_dist.models.paths import build_path_term, history_csr
from graphrec_dist.models.sparse import csr_rows


def compare(config: str, overrides: list[str], rounds: int = 6) -> dict[str, float]:
    torch.set_num_threads(1)
    cfg = load_config(config, overrides)
    if not cfg.model.path.relations:
        cfg = load_config(config, [*overrides, "model.path.relations=[co_items]"])
    bundle = prepare_bundle(cfg.data)
    term = build_path_term(cfg.model, bundle)
    indptr, items = history_csr(bundle.train, bundle.num_users)
    gen = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"csr": [], "enumerated": [], "dense": []}
    counts: dict[str, list[int]] = {"csr": [], "enumerated": []}
    # (scatter cost, dense ratio) forcing each product; set on this term's relations only
    settings = {"csr": (float("inf"), 0.0), "enumerated": (0.0, 0.0), "dense": (0.0, float("inf"))}
    for _ in range(rounds):
        rows = bundle.train[torch.randint(len(bundle.train), (cfg.train.batch_size,), generator=gen)]
        users = torch.unique(rows[:, 0])
        for product, (cost, ratio) in settings.items():
            term.SCATTER_COST = term.FIXED_SCATTER_COST = cost
            for rel in term.relations:
                rel.DENSE_RATIO = ratio
            start = time.perf_counter()
            out = term.scores(indptr, items, users)
            out.sum().backward()
            times[product].append(1000 * (time.perf_counter() - start))
        counts["csr"].append(term.num_edges * len(users))
        hist = items[csr_rows(indptr, users)[1]]
        counts["enumerated"].append(term.enumerated_madds(hist))
    ms = {p: sum(sorted(t)[1:-1]) / max(len(t) - 2, 1) for p, t in times.items()}
    madds = {p: sum(c) / len(c) for p, c in counts.items()}
    per_madd = {p: ms[p] / madds[p] for p in madds}
    return {"csr_ms": ms["csr"], "enumerated_ms": ms["enumerated"], "dense_ms": ms["dense"],
            "csr_madds": madds["csr"], "enumerated_madds": madds["enumerated"],
            "scatter_cost": per_madd["enumerated"] / per_madd["csr"],
            "density": term.num_edges / term.num_items ** 2}


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(prog="python benchmarks/experiments/path_product.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args(argv)
    r = compare(args.config, args.overrides, args.rounds)
    print(f"csr {r['csr_ms']:.1f} ms ({r['csr_madds'] / 1e6:.1f}M multiply-adds), enumerated "
          f"{r['enumerated_ms']:.1f} ms ({r['enumerated_madds'] / 1e6:.1f}M), dense {r['dense_ms']:.1f} ms; "
          f"one scattered multiply-add costs {r['scatter_cost']:.1f} of the kernel's; edges / items^2 "
          f"{r['density']:.2f}")
    return r


if __name__ == "__main__":
    main()
