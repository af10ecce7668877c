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
