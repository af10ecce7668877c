"""Full-graph training steps with fused layers against to_hetero's own forward, side by side.

    python benchmarks/experiments/fused_layers.py CONFIG [overrides ...] [--rounds 6 --steps 5]

Both models are built from the same config and seed; rounds alternate between them so that a busy
machine slows both alike. Prints the mean milliseconds per step (forward, backward, full softmax)
of each, dropping each one's fastest and slowest round, and their ratio.
"""
from __future__ import annotations

import argparse
import time

import torch

from graphrec_dist.config import load_config
from graphrec_dist.data.prepare import prepare_bundle
from graphrec_dist.losses import full_softmax_loss
from graphrec_dist.models import build_model
from graphrec_dist.models.base import TripletBatch


def compare(config: str, overrides: list[str], rounds: int = 6, steps: int = 5) -> dict[str, float]:
    """Milliseconds per step, fused and not, on ``config``'s data and batch size."""
    torch.set_num_threads(1)
    cfg = load_config(config, overrides)
    bundle = prepare_bundle(cfg.data)
    models = {}
    for fused in (True, False):
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg, bundle)
        model.encoder.fused = fused and model.encoder.fused
        models[fused] = model
    gen = torch.Generator().manual_seed(0)
    times: dict[bool, list[float]] = {True: [], False: []}
    n = cfg.train.batch_size
    for _ in range(rounds):
        for fused, model in models.items():
            rows = bundle.train[torch.randint(len(bundle.train), (n,), generator=gen)]
            batch = TripletBatch(rows[:, 0].contiguous(), rows[:, 1].contiguous(),
                                 torch.randint(bundle.num_books, (n, 1), generator=gen))
            start = time.perf_counter()
            for _ in range(steps):
                out = model.bpr_forward(batch)
                full_softmax_loss(out.user, out.items, batch.pos, extra=out.extra).backward()
            times[fused].append(1000 * (time.perf_counter() - start) / steps)
    trimmed = {f: sorted(t)[1:-1] if len(t) > 2 else t for f, t in times.items()}
    ms = {f: sum(t) / len(t) for f, t in trimmed.items()}
    return {"fused_ms": ms[True], "to_hetero_ms": ms[False], "ratio": ms[True] / ms[False]}


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(prog="python benchmarks/experiments/fused_layers.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    res = compare(args.config, args.overrides, args.rounds, args.steps)
    print(f"fused {res['fused_ms']:.1f} ms/step, to_hetero {res['to_hetero_ms']:.1f} ms/step, "
          f"ratio {res['ratio']:.2f}")
    return res


if __name__ == "__main__":
    main()
