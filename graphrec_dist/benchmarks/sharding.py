"""Replicated vs user-sharded training side by side: per-rank peak RSS, seconds per step, all-reduce
traffic and validation NDCG@10 of the same preset, steps and seed.

    graphrec-dist bench --sections sharding        # 5,342 users, W = 1, 2 (--full: 534,240, W = 1, 2, 4)
    python -m graphrec_dist.benchmarks.sharding --users 53424 --ranks 1,2,4 --steps 4 --out bench_out/sharding

Each run is ``graphrec-dist train`` (one process) or ``torchrun --nproc_per_node=W`` in a child
whose peak RSS is read from ``getrusage(RUSAGE_CHILDREN)`` by a wrapper process: the largest
process of the run, i.e. the busiest rank (torchrun's own agent is smaller). The preset is
configs/demo.yaml's model and train sections (full-graph graphsage, softmax over every item) on
generated Goodbooks-shaped data of ``--users`` users, stopped after ``--steps`` steps, then
validated and tested (so the peak includes evaluation). The data are generated first, then built
with as many user partitions as the least common multiple of ``--ranks`` (so no sharded run loads
the whole bundle) twice, each in its own measured child: in memory (``data build --partitions P
--in-memory``: the whole bundle, then the partitions cut from it) and streamed (``data build
--partitions P``, :mod:`graphrec_dist.data.stream_build`), whose bundle the runs train on.
``--build-only`` stops there. Rows are printed as a Markdown table and written to
``OUT/sharding.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from graphrec_dist.io_utils import write_json_atomic

PRESET = "configs/demo.yaml"
GENERATE = ("import sys; from graphrec_dist.config import load_config; from graphrec_dist.data.prepare import "
            "ensure_synth; ensure_synth(load_config(sys.argv[1], sys.argv[2:]).data)")
WRAPPER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
           "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def train_cmd(world: int, overrides: list[str]) -> list[str]:
    """The training command on ``world`` processes (torchrun beyond one)."""
    if world == 1:
        return [sys.executable, "-m", "graphrec_dist.train", PRESET, *overrides]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--local-addr=127.0.0.1",
            f"--nproc_per_node={world}", "-m", "graphrec_dist.train", PRESET, *overrides]


def peak_of(cmd: list[str], timeout_s: float) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``cmd`` under the RSS wrapper: (the process, its largest process's peak GiB, seconds)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True,
                          timeout=timeout_s, env=_env())
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    peak = next(int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("PEAK_RSS_KIB"))
    return proc, round(peak / 2 ** 20, 3), round(wall, 1)


def build_data(common: list[str], partitions: int, timeout_s: float) -> dict[str, Any]:
    """Generate the data, then build the bundle with its user partitions in memory and streamed,
    each in a measured child; the streamed figures, with the others beside them."""
    data = [o for o in common if o.startswith("data.")]
    _, gen_peak, gen_wall = peak_of([sys.executable, "-c", GENERATE, PRESET, *data], timeout_s)
    build = [sys.executable, "-m", "graphrec_dist", "data", "build", PRESET, *data, "--partitions",
             str(partitions), "--force"]
    _, mem_peak, mem_wall = peak_of([*build, "--in-memory"], timeout_s)
    _, peak, wall = peak_of(build, timeout_s)
    return {"run": "data build + partitions (streamed)", "partitions": partitions, "peak_rss_gib": peak,
            "wall_s": wall, "in_memory": {"peak_rss_gib": mem_peak, "wall_s": mem_wall},
            "peak_vs_in_memory": round(peak / mem_peak, 3), "generate": {"peak_rss_gib": gen_peak, "wall_s": gen_wall}}


def build_line(build: dict[str, Any]) -> str:
    """One sentence with the build figures (the streamed ones, and the in-memory ones when measured)."""
    text = (f"data build + {build['partitions']} user partitions, streamed: peak RSS {build['peak_rss_gib']} GiB, "
            f"{build['wall_s']} s")
    if "in_memory" in build:
        old = build["in_memory"]
        text += (f"; in memory: {old['peak_rss_gib']} GiB, {old['wall_s']} s (streamed peak "
                 f"{build['peak_vs_in_memory']}× in memory)")
    return text


def run_one(name: str, world: int, sharding: str, common: list[str], out: Path, timeout_s: float) -> dict[str, Any]:
    """One training run in a child; its figures from the wrapper's RSS line and metrics.jsonl."""
    run = out / name
    _, peak, wall = peak_of(train_cmd(world, [*common, f"dist.sharding={sharding}", f"run.out_dir={run}",
                                              "train.resume=never"]), timeout_s)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    test = json.loads((run / "test_metrics.json").read_text())
    steps = rows[-1]["step"]
    return {"run": name, "ranks": world, "sharding": sharding, "peak_rss_gib": peak,
            "s_per_step": round(sum(r["epoch_time_s"] for r in rows) / steps, 3), "steps": steps,
            "allreduce_mb_per_step": rows[-1].get("allreduce_mb_per_step"),
            "allreduce_s_per_step": rows[-1].get("allreduce_s_per_step"),
            "val_ndcg@10": round(rows[-1]["val_ndcg@10"], 5), "test_ndcg@10": round(test["ndcg@10"], 5),
            "wall_s": wall}


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| run | ranks | peak RSS per rank (GiB) | s / step | all-reduce MB / step | all-reduce s / step "
            "| val NDCG@10 | test NDCG@10 |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['ranks']} | {r['peak_rss_gib']} | {r['s_per_step']} | "
                     f"{r['allreduce_mb_per_step'] if r['allreduce_mb_per_step'] is not None else '—'} | "
                     f"{r['allreduce_s_per_step'] if r['allreduce_s_per_step'] is not None else '—'} | "
                     f"{r['val_ndcg@10']} | {r['test_ndcg@10']} |")
    return "\n".join(lines)


def measure(users: int, worlds: list[int], steps: int, out: Path, timeout_s: float,
            build_only: bool = False) -> dict[str, Any]:
    """The data build and the replicated and sharded runs at ``users``; the section's results."""
    data = out / "data"
    common = [f"data.synth_users={users}", f"data.raw_dir={data / 'raw'}", f"data.bundle_dir={data / 'bundle'}",
              f"train.max_steps={steps}", "run.progress=false", "train.num_threads=1"]
    build = build_data(common, math.lcm(*worlds), timeout_s)
    if build_only:
        return {"users": users, "steps": steps, "preset": PRESET, "build": build, "rows": []}
    rows = [run_one("replicated", 1, "replicate", common, out, timeout_s)]
    rows += [run_one(f"sharded-w{world}", world, "users", common, out, timeout_s) for world in worlds]
    return {"users": users, "steps": steps, "preset": PRESET, "build": build, "rows": rows}


def run_section(plan) -> dict[str, Any]:
    """``graphrec-dist bench --sections sharding`` (``plan``: a benchmarks.plan.BenchPlan)."""
    return measure(plan.sharding_users, plan.sharding_ranks, plan.sharding_steps, Path(plan.out_dir) / "sharding",
                   timeout_s=4 * 3600)


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m graphrec_dist.benchmarks.sharding",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=53424, help="generated users (53,424 = Goodbooks-10k)")
    parser.add_argument("--ranks", default="1,2,4", help="world sizes of the sharded runs")
    parser.add_argument("--steps", type=int, default=4, help="training steps per run")
    parser.add_argument("--out", default="bench_out/sharding")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    parser.add_argument("--build-only", action="store_true", help="measure the data builds only, no training")
    args = parser.parse_args(argv)
    out = Path(args.out)
    res = measure(args.users, [int(w) for w in args.ranks.split(",")], args.steps, out, args.timeout,
                  args.build_only)
    command = " ".join(["python -m graphrec_dist.benchmarks.sharding", *(argv or sys.argv[1:])])
    write_json_atomic(out / "sharding.json", {**res, "command": command})
    print(build_line(res["build"]))
    if res["rows"]:
        print(table(res["rows"]))
    return res["rows"]


if __name__ == "__main__":
    main()
