"""Every torch.distributed call of the package: the process group, the collectives, and which
rows a rank owns.

``init_distributed`` reuses a group that torchrun or Ray Train already made, starts one from the
torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK) when present, and otherwise runs as a single
process; ``launcher_context`` wraps a group a launcher made (Ray). Reductions have names and reduce
sums, never per-rank ratios; they hand the group tensors on the process's device (``ctx.device``:
NCCL takes nothing else) and give results back where the caller's tensors were. ``shard`` is the
one rule that splits rows between ranks.
"""
from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from graphrec_dist.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # True when init_distributed created the group (and must destroy it)

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _pick_device(device: str, local_rank: int) -> torch.device:
    """``dist.device`` for the process of ``local_rank``: GPU ``local_rank`` (made current), or the
    CPU. A ConfigError when CUDA is asked for and there is no such GPU here."""
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(f"config key 'dist.device=cuda': torch finds no CUDA device here (torch {torch.__version__},"
                          f" built for CUDA {torch.version.cuda}); pass dist.device=cpu or dist.device=auto")
    if local_rank >= count:
        raise ConfigError(f"local rank {local_rank} needs CUDA device {local_rank}, but {count} are visible: start at"
                          f" most {count} process(es) per machine (torchrun --nproc_per_node, launch/torchrun.sh's "
                          f"NPROC), or pass dist.device=cpu")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(backend: str = "auto", device: str = "auto", timeout_s: int = 600) -> DistContext:
    """Join or start the process group; idempotent. Single process when no launcher set one up."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns_group=False)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(0, 1, local_rank, dev, owns_group=False)
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    # NCCL bound to this rank's GPU up front: its first barrier need not guess the device.
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                            device_id=dev if backend == "nccl" else None)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns_group=True)


def launcher_context(rank: int, world_size: int, local_rank: int, device: torch.device) -> DistContext:
    """The context of a process whose launcher (Ray Train) made, and will end, the process group."""
    if world_size > 1 and not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("the launcher did not set up the torch.distributed process group")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return DistContext(rank, world_size, local_rank, device, owns_group=False)


def shard(n: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous block of ``n`` rows: ``n*rank//world_size`` up to the next rank's
    start, so block sizes differ by at most one and every row has exactly one owner."""
    return slice(n * rank // world_size, n * (rank + 1) // world_size)


def cleanup(ctx: DistContext) -> None:
    """Destroy the process group if this process created it (Ray and callers own theirs)."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


def _all_reduce(tensor: torch.Tensor, op, ctx: DistContext) -> torch.Tensor:
    if not ctx.is_distributed:
        return tensor
    if tensor.device != ctx.device:  # NCCL reduces tensors on the rank's GPU only
        tensor.copy_(_all_reduce(tensor.to(ctx.device), op, ctx))
        return tensor
    dist.all_reduce(tensor, op=op)
    return tensor


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over ranks in place (a no-op on one process) and return it."""
    return _all_reduce(tensor, dist.ReduceOp.SUM, ctx)


def all_reduce_max(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Elementwise maximum over ranks, in place."""
    return _all_reduce(tensor, dist.ReduceOp.MAX, ctx)


def max_over_ranks(value: float, ctx: DistContext) -> float:
    """The largest ``value`` over all ranks (e.g. the slowest rank's epoch time)."""
    return float(all_reduce_max(torch.tensor([value], dtype=torch.float64), ctx)[0])


def all_gather_object(obj: object, ctx: DistContext) -> list:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` on one process)."""
    if not ctx.is_distributed:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def all_gather_rows(block: torch.Tensor, n: int, ctx: DistContext) -> torch.Tensor:
    """The full [n, ...] tensor from every rank's ``shard`` of its rows (``block``), on ``block``'s
    device; blocks are padded to one size and gathered on ``ctx.device`` (NCCL takes nothing else)."""
    if not ctx.is_distributed:
        return block
    if block.device != ctx.device:
        return all_gather_rows(block.to(ctx.device), n, ctx).to(block.device)
    size = -(-n // ctx.world_size)
    padded = block.new_zeros((size,) + tuple(block.shape[1:]))
    padded[:block.size(0)] = block
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded.contiguous())
    rows = [shard(n, r, ctx.world_size) for r in range(ctx.world_size)]
    return torch.cat([part[:s.stop - s.start] for part, s in zip(parts, rows)])


def broadcast_object(obj: object, ctx: DistContext, src: int = 0) -> object:
    """Send a picklable object from ``src`` to every rank."""
    if not ctx.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@dataclass
class CommStats:
    """Bytes and seconds spent in the all-reduces of user-sharded training, since the last reset.

    A collective on GPU tensors returns once it is queued, so the host clock would time the launch;
    those are timed by CUDA events around them on the stream, read (waiting for the GPU) when
    :attr:`seconds` is asked for, or once :attr:`MAX_EVENTS` pairs are pending."""

    MAX_EVENTS = 1024
    bytes: int = 0
    host_seconds: float = 0.0
    events: list = field(default_factory=list)  # (start, end) torch.cuda.Event pairs not read yet

    @property
    def seconds(self) -> float:
        self._read_events()
        return self.host_seconds

    def _read_events(self) -> None:
        for start, end in self.events:
            end.synchronize()
            self.host_seconds += start.elapsed_time(end) / 1000  # milliseconds
        self.events = []

    def reset(self) -> None:
        self.bytes, self.host_seconds, self.events = 0, 0.0, []


COMM = CommStats()  # one per process: the trainer reads and resets it each epoch


def _timed_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if not ctx.is_distributed:
        return tensor
    COMM.bytes += tensor.numel() * tensor.element_size()
    if tensor.is_cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        all_reduce_sum(tensor, ctx)
        end.record()
        COMM.events.append((start, end))
        if len(COMM.events) >= COMM.MAX_EVENTS:
            COMM._read_events()
    else:
        start_s = time.perf_counter()
        all_reduce_sum(tensor, ctx)
        COMM.host_seconds += time.perf_counter() - start_s
    return tensor


class _SumOverRanks(torch.autograd.Function):
    """Forward: the sum over ranks of every rank's tensor. Backward: the same sum of the gradient,
    because each rank's loss reads the summed output, so the gradient of the total loss with
    respect to any rank's input is the sum of every rank's gradient of the output."""

    @staticmethod
    def forward(fctx, tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
        fctx.dist = ctx
        return _timed_sum(tensor.clone(), ctx)

    @staticmethod
    def backward(fctx, grad: torch.Tensor):
        return _timed_sum(grad.clone(), fctx.dist), None


def sum_over_ranks(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Autograd-aware all-reduce sum (a no-op on one process): partial aggregates of each rank's
    own users become the aggregate over all users, and gradients flow back to every rank."""
    if not ctx.is_distributed:
        return tensor
    return _SumOverRanks.apply(tensor, ctx)


def sum_gradients(params: Iterable[torch.nn.Parameter], ctx: DistContext) -> None:
    """Sum the gradients of replicated parameters over ranks in one flat all-reduce. A parameter
    no rank gave a gradient keeps ``grad=None`` (as on one process, so the optimizer skips it);
    one that only some ranks did counts as zeros on the others."""
    if not ctx.is_distributed:
        return
    params = list(params)
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    # The flags travel with the gradients, on their device (a CPU tensor cannot join CUDA ones).
    had = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
    flat = _timed_sum(torch.cat([g.reshape(-1) for g in grads] + [had]), ctx)
    anyone = (flat[len(flat) - len(params):] > 0).tolist()  # one device-to-host copy, not one a parameter
    at = 0
    for p, g, got in zip(params, grads, anyone):
        n = g.numel()
        if got:
            p.grad = g.copy_(flat[at:at + n].view_as(g))
        at += n
