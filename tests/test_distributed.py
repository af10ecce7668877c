import pytest
import torch

from graphrec_dist import distributed
from graphrec_dist.errors import ConfigError


def test_single_process_context_without_launcher(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx = distributed.init_distributed(device="cpu")
    try:
        assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed) == (0, 1, True, False)
        assert not ctx.owns_group
        t = torch.tensor([1.0, 2.0])
        assert torch.equal(distributed.all_reduce_sum(t, ctx), torch.tensor([1.0, 2.0]))
        assert distributed.broadcast_object({"a": 1}, ctx) == {"a": 1}
        distributed.barrier(ctx)
    finally:
        distributed.cleanup(ctx)


def test_shard_gives_every_row_one_owner_in_near_equal_blocks():
    blocks = [distributed.shard(10, r, 3) for r in range(3)]
    assert [(b.start, b.stop) for b in blocks] == [(0, 3), (3, 6), (6, 10)]
    assert [distributed.shard(2, r, 3) for r in range(3)] == [slice(0, 0), slice(0, 1), slice(1, 2)]


def test_single_process_collectives_are_identities():
    ctx = distributed.DistContext()
    assert distributed.all_gather_object("x", ctx) == ["x"]
    assert distributed.max_over_ranks(2.5, ctx) == 2.5
    rows = torch.arange(6.0).view(3, 2)
    assert distributed.all_gather_rows(rows, 3, ctx) is rows


class _Handed(Exception):
    """Raised by the fake collectives below once they have seen what they were given."""


def _fake_collectives(monkeypatch) -> list[torch.device]:
    """torch.distributed's all_reduce and all_gather replaced by fakes that record the device of
    what they are handed, then stop the caller (no process group is needed)."""
    seen: list[torch.device] = []

    def record(tensor_or_list, tensor=None, **_) -> None:
        seen.append((tensor if tensor is not None else tensor_or_list).device)
        raise _Handed

    monkeypatch.setattr(distributed.dist, "all_reduce", lambda tensor, op=None: record(tensor))
    monkeypatch.setattr(distributed.dist, "all_gather", record)
    return seen


# CPU-only torch has no second device with storage; the meta device stands in for the GPU of a
# NCCL rank: a tensor there carries its device but no data, so the fakes stop at the collective.
META = distributed.DistContext(rank=0, world_size=2, device=torch.device("meta"))


def test_sum_gradients_hands_the_group_one_tensor_on_the_gradients_device(monkeypatch):
    seen = _fake_collectives(monkeypatch)
    params = [torch.nn.Parameter(torch.zeros(3, device="meta")), torch.nn.Parameter(torch.zeros(2, device="meta"))]
    params[0].grad = torch.ones(3, device="meta")  # the second one got no gradient on this rank
    with pytest.raises(_Handed):
        distributed.sum_gradients(params, META)
    assert seen == [torch.device("meta")]


def test_all_gather_rows_gathers_on_the_process_device_whatever_the_blocks_device(monkeypatch):
    seen = _fake_collectives(monkeypatch)
    with pytest.raises(_Handed):
        distributed.all_gather_rows(torch.ones(2, 4), 4, META)  # e.g. a model left on the CPU
    assert seen == [torch.device("meta")]


def test_asking_for_a_gpu_that_is_not_there_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="dist.device=cuda.*no CUDA device.*dist.device=cpu"):
        distributed._pick_device("cuda", 0)
    assert distributed._pick_device("auto", 0) == torch.device("cpu")
    # One GPU, two processes on the machine: the second has none of its own.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for device in ("cuda", "auto"):
        with pytest.raises(ConfigError, match="local rank 1 needs CUDA device 1, but 1 are visible"):
            distributed._pick_device(device, 1)
