import torch

from graphrec_dist import distributed


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
