"""The checks of ``launch/gpu_check.sh`` that are more than one command; exit 0 = passed.

    python launch/gpu_check_probe.py nccl                  the package's collectives on a 1-rank NCCL group
    python launch/gpu_check_probe.py same-metrics RUN JSON  ``evaluate``'s JSON output agrees with RUN's test metrics
    python launch/gpu_check_probe.py serve RUN              ``serve`` answers /health and /recommend for RUN

A one-GPU machine cannot start two NCCL ranks (NCCL refuses two ranks on one GPU), and a world of
one runs no collective at all, so ``nccl`` hands a one-rank group what a rank of a larger world
would: the context claims two ranks (``is_distributed``), the group sums over the one there is.
Only the all-reduce-based collectives can be checked that way (an all_gather needs the group's size).
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def nccl() -> None:
    import torch
    import torch.distributed as dist

    from graphrec_dist import distributed as d

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", rank=0, world_size=1, timeout=datetime.timedelta(seconds=60), device_id=device)
    try:
        ctx = d.DistContext(rank=0, world_size=2, local_rank=0, device=device)
        cpu = torch.tensor([1.0, 2.0], dtype=torch.float64)  # the trainer's loss sums: a CPU tensor
        assert d.all_reduce_sum(cpu, ctx).device.type == "cpu" and cpu.tolist() == [1.0, 2.0]
        assert d.max_over_ranks(3.5, ctx) == 3.5
        params = [torch.nn.Parameter(torch.ones(3, device=device)), torch.nn.Parameter(torch.ones(2, device=device))]
        params[0].grad = torch.full((3,), 2.0, device=device)  # the second one got no gradient
        d.sum_gradients(params, ctx)
        assert params[0].grad.tolist() == [2.0] * 3 and params[1].grad is None
        x = torch.ones(4, 2, device=device, requires_grad=True)
        d.sum_over_ranks(x * 3, ctx).sum().backward()
        assert x.grad.tolist() == [[3.0, 3.0]] * 4
        assert d.COMM.seconds >= 0.0 and d.COMM.bytes > 0  # CUDA-event timing read back
        dist.barrier()
    finally:
        dist.destroy_process_group()
    print("nccl: all_reduce_sum (CPU tensor staged), max_over_ranks, sum_gradients, sum_over_ranks + backward: ok")


def same_metrics(run: str, printed: str) -> None:
    """The CPU evaluation of a GPU-trained run against the GPU's own test metrics (other kernels:
    equal to ~1e-6 per score, so a rank may move; 0.01 NDCG is far above that, far below a bug)."""
    text = Path(printed).read_text()
    got = json.loads(text[text.index("{"):])
    want = json.loads((Path(run) / "test_metrics.json").read_text())
    assert got["num_users"] == want["num_users"] > 0, (got["num_users"], want["num_users"])
    for key in ("ndcg@10", "recall@20", "mrr"):
        assert abs(got[key] - want[key]) < 0.01, (key, got[key], want[key])
    print(f"evaluate on the CPU: ndcg@10 {got['ndcg@10']:.4f}, trained run's {want['ndcg@10']:.4f}")


def serve(run: str) -> None:
    from graphrec_dist.checkpoint import load_run

    user = str(load_run(run)[2].users["user_id"].iloc[0])
    proc = subprocess.Popen([sys.executable, "-m", "graphrec_dist", "serve", "--run", run, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, url = time.monotonic() + 90, None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"serve exited with {proc.wait()} before it listened")
            print(line, end="")
            if line.startswith("serving "):
                url = line.rsplit(" ", 1)[1].strip()
        assert url is not None, "serve did not listen within 90 s"
        health = json.load(urllib.request.urlopen(f"{url}/health", timeout=30))
        assert health["status"] == "ok", health
        answer = json.load(urllib.request.urlopen(f"{url}/recommend?user={user}&k=5", timeout=30))
        print(json.dumps(answer)[:500])
        assert len(answer["items"]) == 5, answer
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"nccl": nccl, "same-metrics": same_metrics, "serve": serve}[command](*args)
