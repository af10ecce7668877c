"""The gradient training loop: :class:`Trainer` for ``sampled`` and ``triplet`` models.

It owns batches (per-rank sampling seeds), the warm-up forward and DDP wrap, when to save and what
to restore (the format is :mod:`graphrec_dist.checkpoint`'s), the epoch loop (``fit`` /
``train_epoch`` / ``step`` / ``end_epoch``) and early stopping on the validation metric
(``track_best``). Entry points that build the data and model and call these, and the fit of
closed-form models, live in :mod:`graphrec_dist.train`.
"""
from __future__ import annotations

import copy
import os
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from graphrec_dist import checkpoint, elastic, run_dir
from graphrec_dist.checkpoint import checkpoint_state
from graphrec_dist.config import Config
from graphrec_dist.distributed import (
    COMM,
    DistContext,
    all_gather_object,
    all_reduce_sum,
    barrier,
    max_over_ranks,
    sum_gradients,
)
from graphrec_dist.errors import ConfigError
from graphrec_dist.evaluate import evaluate_model
from graphrec_dist.io_utils import write_text_atomic
from graphrec_dist.logging_utils import get_logger, progress
from graphrec_dist.losses import ranking_loss
from graphrec_dist.models.base import Recommender, RowScores, TripletBatch
from graphrec_dist.sampling import (
    ShardedTripletLoader,
    TripletLoader,
    make_link_loader,
    sampling_seed,
    shard_edges,
    steps_per_epoch,
)

log = get_logger("train")  # kept from before the split so log filters on "graphrec_dist.train" still work


@dataclass
class TrainHooks:
    """Seams for launchers. ``resume_from`` returns a checkpoint file to resume from (or None);
    ``on_epoch_end(row, checkpoint)`` runs on every rank after each epoch (checkpoint: rank 0's
    last.pt path, None elsewhere), e.g. to ``ray.train.report`` metrics and the checkpoint;
    ``on_start(model)`` runs on every rank once the (unwrapped) model is built;
    ``on_checkpoint(info, checkpoint)`` runs on every rank after each mid-epoch checkpoint
    (``train.checkpoint_every``; info: epoch, step, step_in_epoch), so a launcher can keep it too;
    ``on_phase(name)`` runs inside :meth:`Trainer.step` as each phase ends (``forward``, which
    includes the loss; ``backward``; ``optimizer``), so a profiler can time the real step;
    ``on_step(global_step, loss, lr)`` runs on every rank after each step with this rank's batch
    loss and the learning rate after the step (e.g. TensorBoard, :mod:`graphrec_dist.tracking`)."""

    resume_from: Optional[Callable[[], Optional[Path]]] = None
    on_epoch_end: Optional[Callable[[dict[str, Any], Optional[Path]], None]] = None
    on_checkpoint: Optional[Callable[[dict[str, Any], Optional[Path]], None]] = None
    on_start: Optional[Callable[[Recommender], None]] = None
    on_phase: Optional[Callable[[str], None]] = None
    on_step: Optional[Callable[[int, float, float], None]] = None


@dataclass
class TrainResult:
    """What a run returns: where its files are, its test metrics and its validation history."""

    out_dir: Path
    test_metrics: dict[str, float]
    best_val: Optional[dict[str, float]]
    best_epoch: int
    history: list[dict[str, Any]]
    global_step: int
    stopped_early: bool
    model: Optional[Recommender] = field(default=None, repr=False)
    inductive: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> metrics (cold_*)


@dataclass
class TrainState:
    """The trainer's bookkeeping; saved in every checkpoint."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_metric: float = float("-inf")
    best_epoch: int = -1
    best_val: Optional[dict[str, float]] = None
    bad_evals: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_loss_sum: float = 0.0
    epoch_count: int = 0
    epoch_time_s: float = 0.0


class _BPRModule(torch.nn.Module):
    """``forward = model.bpr_forward`` so DDP's hooks see the training computation."""

    def __init__(self, model: Recommender):
        super().__init__()
        self.model = model

    def forward(self, batch):
        out = self.model.bpr_forward(batch)
        # Tensors only (DDP looks through the outputs): the path scores' table and row index apart.
        extra = (out.extra.table, out.extra.index, out.extra.columns) if out.extra is not None else (None,) * 3
        return out.pos, out.neg, out.reg, out.user, out.items, *extra


def batch_loss(cfg: Config, outputs: tuple, batch, seen: Optional[tuple[torch.Tensor, torch.Tensor]] = None
               ) -> torch.Tensor:
    """``train.loss`` of a batch from ``_BPRModule``'s outputs, plus ``train.l2`` times the
    embedding penalty, in float32 with autocast off whatever the forward ran in: the full
    softmax's ``user @ items.T`` would otherwise be a bf16 matmul (logits rounded to ~3 digits,
    and ``mask_seen``'s -inf written into bf16). ``seen``: every user's training items as CSR
    (``train.mask_seen``)."""
    pos, neg, reg, user, items, table, index, columns = outputs
    pos, neg, reg, user, items, table = (None if t is None else t.float() for t in (pos, neg, reg, user, items, table))
    extra = RowScores(table, index, columns) if table is not None else None
    pos_items = batch.pos if isinstance(batch, TripletBatch) else None
    user_ids = batch.users if cfg.train.softmax_per_user and pos_items is not None else None
    with torch.autocast(pos.device.type, enabled=False):
        loss = ranking_loss(cfg.train.loss, pos, neg, user, items, pos_items,
                            cfg.train.softmax_negatives, user_ids, seen, extra)
        return loss + cfg.train.l2 * reg


def param_groups(model: Recommender, default_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``train.weight_decay`` and the optimizer's own lr and eps, except
    where the model names its own settings for a parameter (``model.group_overrides()``: name ->
    {weight_decay, lr, eps}, e.g. graphsage's path offsets)."""
    own = model.group_overrides() if hasattr(model, "group_overrides") else {}
    groups: dict[tuple, list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        settings = {"weight_decay": default_decay, **own.get(name, {})}
        groups.setdefault(tuple(sorted(settings.items())), []).append(p)
    return [{"params": ps, **dict(settings)} for settings, ps in groups.items()]


def metric_key(cfg: Config) -> str:
    """Early stopping watches NDCG@10 (or NDCG at the first K when 10 is not evaluated)."""
    return "ndcg@10" if 10 in cfg.eval.ks else f"ndcg@{cfg.eval.ks[0]}"


class Trainer:
    """Gradient training of a ``sampled`` or ``triplet`` model; see :func:`graphrec_dist.train.run_training`."""

    def __init__(self, cfg: Config, ctx: DistContext, model: Recommender, bundle, hooks: TrainHooks):
        self.cfg, self.ctx, self.model, self.bundle, self.hooks = cfg, ctx, model, bundle, hooks
        self.out_dir = Path(cfg.run.out_dir)
        tc = cfg.train
        # dist.sharding=users: this rank holds its users' rows only (docs/SCALING.md); their
        # parameters get no all-reduce, the replicated ones' gradients are summed over ranks.
        self.sharded = bundle.shard is not None
        self.owned: set[str] = set()
        if self.sharded:
            model.use_context(ctx)
            self.owned = model.owned_parameters()
            self.triplets = ShardedTripletLoader(bundle, tc.batch_size, tc.neg_per_pos, tc.seed, tc.edges_per_epoch)
            self.steps = len(self.triplets)
        else:
            self.steps = steps_per_epoch(len(bundle.train), tc.batch_size, ctx.world_size, tc.edges_per_epoch)
        self.replicated = [p for name, p in model.named_parameters() if name not in self.owned]
        self.optimizer = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr, weight_decay=tc.weight_decay)
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=tc.epochs * self.steps)
                          if tc.lr_schedule == "cosine" else None)
        self.state = TrainState()
        # train.mask_seen: every user's training items (CSR), masked out of its softmax.
        self.seen = (tuple(torch.from_numpy(a).to(ctx.device) for a in bundle.train_csr()) if tc.mask_seen else None)
        self.best_model: Optional[dict[str, Any]] = None
        self._rng_after_step: Optional[dict[str, Any]] = None
        self._comm = (0, 0.0, 1)  # sharded: (all-reduce bytes, seconds, steps) of the last epoch
        self._fault_armed = True  # debug.fail_after_step acts on a fresh run only, not after a resume
        if model.kind == "sampled":
            self.graph = model.message_graph(bundle)
        elif not self.sharded:
            self.triplets = TripletLoader(bundle, tc.batch_size, tc.neg_per_pos, tc.seed, ctx.rank,
                                          ctx.world_size, tc.edges_per_epoch)
        self.amp = tc.amp and (ctx.device.type == "cuda" or cfg.debug.amp_on_cpu)

    # -- batches ---------------------------------------------------------------------------
    def batches(self, epoch: int, start: int) -> Iterable:
        """This rank's batches ``start..`` of ``epoch``; sampling RNG seeded per (seed, rank, epoch)."""
        tc = self.cfg.train
        if self.model.kind == "triplet":
            return self.triplets.epoch(epoch, start)
        if start == 0:
            torch.manual_seed(sampling_seed(tc.seed, self.ctx.rank, epoch))
        ids = shard_edges(len(self.bundle.train), epoch, tc.seed, self.ctx.rank, self.ctx.world_size,
                          tc.edges_per_epoch)[start * tc.batch_size:]
        return make_link_loader(self.bundle, tc.batch_size, tc.num_neighbors, tc.neg_per_pos, tc.num_workers,
                                seed=sampling_seed(tc.seed, self.ctx.rank, epoch), edge_ids=ids, graph=self.graph,
                                exclude_seed_edges=tc.exclude_seed_edges)

    def _warmup_batch(self):
        """A small first batch, drawn without touching the RNG streams that training uses."""
        tc = self.cfg.train
        rng = checkpoint.rng_state()
        if self.model.kind == "triplet":
            batch = next(iter(self.triplets.epoch(0)))
        else:
            ids = torch.arange(min(64, len(self.bundle.train)))
            batch = next(iter(make_link_loader(self.bundle, len(ids), tc.num_neighbors, tc.neg_per_pos, 0,
                                               edge_ids=ids, graph=self.graph,
                                               exclude_seed_edges=tc.exclude_seed_edges)))
        checkpoint.set_rng_state(rng)
        return batch

    def wrap(self) -> torch.nn.Module:
        """One forward first (materialises any lazy parameters), then DDP when distributed."""
        module = _BPRModule(self.model)
        self.model.eval()
        with torch.no_grad():
            module(self._warmup_batch().to(self.ctx.device))
        self.model.train()
        if not self.ctx.is_distributed or self.sharded:  # sharded: step() sums the replicated gradients
            return module
        ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, name: str) -> Optional[Path]:
        """Gather every rank's RNG state and partial epoch loss, then rank 0 writes ``name``
        atomically; all ranks wait."""
        mine = (self._rng_after_step or checkpoint.rng_state(), (self.state.epoch_loss_sum, self.state.epoch_count))
        gathered = all_gather_object(mine, self.ctx)
        states, sums = [g[0] for g in gathered], [g[1] for g in gathered]
        path, dc = None, self.cfg.debug
        hang = (self._fault_armed and dc.fail_mode == "hang_in_save" and name == run_dir.LAST
                and dc.fail_after_step == self.state.global_step)
        stall = (lambda tmp: hang_until_killed(self.out_dir, self.ctx.rank)) if hang else None
        if self.sharded:
            return checkpoint.save_sharded(self.out_dir / name, self.cfg, self.ctx, self.model, self.owned,
                                           self.bundle, self.state, self.optimizer, self.scheduler, states, sums,
                                           lambda: elastic.data_hash(self.bundle), stall)
        if self.ctx.is_main:
            blob = checkpoint_state(self.cfg, self.model, self.state, self.ctx.world_size,
                                    bundle_hash=self.bundle.content_hash(),
                                    optimizer=self.optimizer.state_dict(), rng=states, loss_sums=sums,
                                    scheduler=self.scheduler.state_dict() if self.scheduler else None)
            path = checkpoint.save_checkpoint(self.out_dir / name, blob, before_rename=stall)
        barrier(self.ctx)
        return path

    def _load_states(self, path: Path, state: dict[str, Any], hint: str) -> tuple[dict[str, Any], Optional[dict],
                                                                                  dict[str, Any]]:
        """(model state, optimizer state, the file that records this rank's data) from a
        checkpoint's main file ``state``: as stored, or merged with this rank's file of a sharded
        checkpoint."""
        sharding = state.get("sharding")
        if bool(sharding) != self.sharded:
            was, now = ("users" if sharding else "replicate"), self.cfg.dist.sharding
            raise ConfigError(f"train.resume: {path} was trained with dist.sharding={was}, this run uses "
                              f"dist.sharding={now}; {hint}")
        if not sharding:
            return state["model"], state.get("optimizer"), state
        if sharding["num_users"] != self.bundle.shard.num_users:
            raise ConfigError(f"train.resume: {path} holds {sharding['num_users']} users; this run's data has "
                              f"{self.bundle.shard.num_users}; {hint}")
        if sharding["world_size"] == self.ctx.world_size:
            own = checkpoint.shard_state(path, state, self.ctx.rank, "cpu", hint)
        else:  # another world size: this rank's new block of users, read from the files that hold it
            elastic.check_data(path, state, self.bundle, hint)
            own = elastic.recut_rows(path, state, self.bundle, self._owned_index(), "cpu", hint)
        return {**state["model"], **own["model"]}, own.get("optimizer"), own

    def _owned_index(self) -> dict[str, int]:
        """Owned parameter name -> its index in the optimizer's state dict (torch numbers the
        parameters in param-group order)."""
        order = {id(p): i for i, p in enumerate(p for group in self.optimizer.param_groups for p in group["params"])}
        return {name: order[id(p)] for name, p in self.model.named_parameters() if name in self.owned}

    def restore(self, path: Path) -> None:
        hint = "pass train.resume=never (starts over, replacing the run's checkpoints) or another run.out_dir"
        # Read onto the CPU whatever the training device: the RNG states must stay CPU byte tensors
        # (torch.set_rng_state takes nothing else), and load_state_dict copies the model's and the
        # optimizer's tensors to where the parameters are.
        state = checkpoint.load_checkpoint(path, map_location="cpu", what_to_do=hint)
        checkpoint.check_same_model(self.cfg, state, path, hint)
        checkpoint.check_mid_epoch_resume(self.cfg, self.model.kind, state, path, hint)
        # Saved on another number of ranks: said before training starts, exact or not (module elastic).
        state, note, exact = elastic.for_world(path, state, self.ctx.world_size, self.sharded, self.bundle,
                                               self.cfg.train)
        if note and self.ctx.is_main:
            (log.info if exact else log.warning)(note)
        model_state, optimizer_state, data_state = self._load_states(path, state, hint)
        try:
            self.model.load_state_dict(model_state)
        except RuntimeError as exc:  # same model config, other data (e.g. other node counts)
            raise ConfigError(f"train.resume: {path} does not fit this data ({checkpoint.mismatch_summary(exc)}); "
                              f"{hint}") from None
        # Same node counts, other edges or splits (a shard: this rank's file records its shard's hash).
        checkpoint.check_same_data(data_state, self.bundle, path, hint)
        self.optimizer.load_state_dict(optimizer_state)
        if self.scheduler and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        self.state = TrainState(**state["trainer"])
        if self.state.step_in_epoch > 0 and state.get("world_size") == self.ctx.world_size:
            checkpoint.set_rng_state(state["rng"][self.ctx.rank])
            # "trainer" holds rank 0's partial epoch loss; each rank takes back its own.
            if "loss_sums" in state:
                self.state.epoch_loss_sum, self.state.epoch_count = state["loss_sums"][self.ctx.rank]
        best = path.parent / run_dir.BEST
        if best.is_file():
            best_state = checkpoint.load_checkpoint(best, map_location="cpu", what_to_do=hint)
            self.best_model = self._load_states(best, best_state, hint)[0]
        log.info("resumed from %s at epoch %d step %d", path, self.state.epoch, self.state.step_in_epoch)

    # -- the loop --------------------------------------------------------------------------
    def resume(self) -> None:
        """Restore the checkpoint that ``train.resume`` (or the launcher) names, if any. The caller
        runs this before writing anything, so a checkpoint it refuses leaves the run as it was."""
        tc = self.cfg.train
        resume = self.hooks.resume_from() if self.hooks.resume_from else checkpoint.resume_path(self.out_dir, tc.resume)
        if resume is not None:
            self.restore(Path(resume))
            self._fault_armed = False

    def fit(self) -> TrainState:
        """Train from the current state (fresh, or what :meth:`resume` restored) to the end."""
        tc = self.cfg.train
        module = self.wrap()
        while (self.state.epoch < tc.epochs and not self.state.stopped_early and not self._out_of_steps()
               and not self._out_of_time()):
            self.train_epoch(module, self.state.epoch)
            row = self.end_epoch()
            path = self.save(run_dir.LAST)
            if self.hooks.on_epoch_end:
                self.hooks.on_epoch_end(row, path)
        return self.state

    def _out_of_steps(self) -> bool:
        return self.cfg.train.max_steps is not None and self.state.global_step >= self.cfg.train.max_steps

    def _out_of_time(self, current_epoch_s: float = 0.0) -> bool:
        """``train.time_budget_s`` is spent by the logged epochs (identical on every rank: each
        logs the slowest rank's time) plus ``current_epoch_s``."""
        budget = self.cfg.train.time_budget_s
        spent = sum(r.get("epoch_time_s", 0.0) for r in self.state.history) + current_epoch_s
        return budget is not None and spent >= budget

    def train_epoch(self, module: torch.nn.Module, epoch: int) -> None:
        st, tc = self.state, self.cfg.train
        start = time.perf_counter()
        COMM.reset()
        first_step = st.step_in_epoch
        self.model.train()
        bar = progress(self.batches(epoch, st.step_in_epoch), self.ctx.is_main and self.cfg.run.progress,
                       total=self.steps - st.step_in_epoch, desc=f"epoch {epoch}")
        for batch in bar:
            loss, n = self.step(module, batch.to(self.ctx.device))
            st.epoch_loss_sum += loss * n
            st.epoch_count += n
            st.step_in_epoch += 1
            st.global_step += 1
            if self.hooks.on_step:
                self.hooks.on_step(st.global_step, loss, self.optimizer.param_groups[0]["lr"])
            if tc.checkpoint_every and st.global_step % tc.checkpoint_every == 0 and st.step_in_epoch < self.steps:
                st.epoch_time_s += time.perf_counter() - start
                start = time.perf_counter()
                self._rng_after_step = checkpoint.rng_state()
                path = self.save(run_dir.LAST)
                self._rng_after_step = None
                if self.hooks.on_checkpoint:
                    self.hooks.on_checkpoint({"epoch": epoch, "step": st.global_step,
                                              "step_in_epoch": st.step_in_epoch}, path)
            if self._fault_armed and self.cfg.debug.fail_after_step == st.global_step:
                self._fail()
            if self._out_of_steps():
                break
        st.epoch_time_s += time.perf_counter() - start
        self._comm = (COMM.bytes, COMM.seconds, max(st.step_in_epoch - first_step, 1))

    def _fail(self) -> None:
        """``debug.fail_after_step`` has come (fault tests): raise, or with ``fail_mode=hang`` the
        last rank stops here until it is killed while the others run on into the next all-reduce."""
        mode = self.cfg.debug.fail_mode
        if mode == "raise":
            raise RuntimeError(f"debug.fail_after_step={self.cfg.debug.fail_after_step}: simulated failure")
        if mode == "hang" and self.ctx.rank == self.ctx.world_size - 1:
            hang_until_killed(self.out_dir, self.ctx.rank)

    def step(self, module: torch.nn.Module, batch) -> tuple[float, int]:
        """One gradient step on ``batch``: (its loss, its number of seed edges)."""
        phase = self.hooks.on_phase or (lambda name: None)
        with torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=self.amp):
            outputs = module(batch)
            rows = int(outputs[0].shape[0])
            if rows == 0:  # a shard without rows in this batch still joins every collective
                loss = outputs[4].sum() * 0.0
            else:
                loss = batch_loss(self.cfg, outputs, batch, self.seen)
        phase("forward")
        self.optimizer.zero_grad(set_to_none=True)
        # Sharded: this rank's share of the mean over the global batch; the sum over ranks is it.
        (loss * (rows / batch.total) if self.sharded else loss).backward()
        if self.sharded:
            sum_gradients(self.replicated, self.ctx)
        phase("backward")
        self.optimizer.step()
        if self.scheduler:
            self.scheduler.step()
        phase("optimizer")
        return float(loss.detach()), rows

    def end_epoch(self) -> dict[str, Any]:
        """Reduce the epoch's loss, validate when due, keep the best model, log one row."""
        st, cfg = self.state, self.cfg
        sums = all_reduce_sum(torch.tensor([st.epoch_loss_sum, float(st.epoch_count)], dtype=torch.float64), self.ctx)
        time_s = max_over_ranks(st.epoch_time_s, self.ctx)
        row: dict[str, Any] = {"epoch": st.epoch, "step": st.global_step, "loss": float(sums[0] / max(sums[1], 1)),
                               "seed_edges": int(sums[1]), "epoch_time_s": round(time_s, 3),
                               "edges_per_s": round(float(sums[1]) / time_s, 1) if time_s > 0 else None,
                               "lr": self.optimizer.param_groups[0]["lr"]}
        if self.sharded:  # this rank's all-reduce traffic (every rank moves the same bytes)
            nbytes, seconds, steps = self._comm
            row["allreduce_mb_per_step"] = round(nbytes / steps / 2 ** 20, 3)
            row["allreduce_s_per_step"] = round(max_over_ranks(seconds, self.ctx) / steps, 5)
            row["peak_rss_mib"] = round(max_over_ranks(peak_rss_mib(), self.ctx), 1)  # the largest rank's
        last = st.epoch + 1 >= cfg.train.epochs or self._out_of_steps() or self._out_of_time(time_s)
        if (st.epoch + 1) % cfg.eval.every == 0 or last:
            val = evaluate_model(self.model, self.bundle, "val", cfg.eval, self.ctx)
            row.update({f"val_{k}": v for k, v in val.items()})
            self.track_best(val)
        row["best_epoch"] = st.best_epoch
        st.history.append(row)
        st.epoch += 1
        st.step_in_epoch, st.epoch_loss_sum, st.epoch_count, st.epoch_time_s = 0, 0.0, 0, 0.0
        if self.ctx.is_main:
            run_dir.write_history(self.out_dir, st.history)
            log.info("epoch %d: %s", row["epoch"], _short(row, metric_key(cfg)))
        return row

    def track_best(self, val: dict[str, float]) -> None:
        st = self.state
        score = val[metric_key(self.cfg)]
        if score > st.best_metric:
            st.best_metric, st.best_epoch, st.best_val, st.bad_evals = score, st.epoch, val, 0
            self.best_model = copy.deepcopy(self.model.state_dict())
            self.save(run_dir.BEST)
        else:
            st.bad_evals += 1
            if st.bad_evals >= self.cfg.train.patience:
                st.stopped_early = True
                log.info("early stopping: no %s gain in %d evaluations", metric_key(self.cfg), st.bad_evals)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hang_until_killed(out_dir: Path, rank: int) -> None:
    """Fault tests: write this process's pid to ``out_dir/hang_rank{rank}.pid``, then sleep forever."""
    write_text_atomic(out_dir / f"hang_rank{rank}.pid", str(os.getpid()))
    while True:
        time.sleep(1)


def _short(row: dict[str, Any], key: str) -> str:
    shown = {k: row[k] for k in ("loss", f"val_{key}", "epoch_time_s", "edges_per_s") if k in row}
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())


