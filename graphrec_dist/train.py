"""Training entry points: one run for every model kind, one process or DDP under torchrun, and ``main(argv)``.

``run_training(cfg, ctx, hooks)`` is launcher-agnostic: ``main`` (one process or torchrun) and the
Ray launcher (``graphrec_dist.launch_ray``) both call it with a ready :class:`DistContext`. Rank 0
alone writes files and logs; every rank runs the same number of steps (see ``sampling``). The
loop itself is :mod:`graphrec_dist.trainer`; the files of the run folder are :mod:`graphrec_dist.run_dir`'s.

Usage: ``graphrec-dist train CONFIG [key=value ...]`` or
``torchrun --nproc_per_node=N -m graphrec_dist.train CONFIG [key=value ...]``.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import torch

from graphrec_dist import checkpoint, launch_ray, run_dir
from graphrec_dist.config import Config, load_config, parse_args as parse_cli_args
from graphrec_dist.data.partition import load_user_shard, partition_counts
from graphrec_dist.data.prepare import ensure_bundle, prepare_bundle
from graphrec_dist.data.store import load_bundle
from graphrec_dist.data.stream_build import build_partitioned
from graphrec_dist.distributed import DistContext, barrier, broadcast_object, cleanup, init_distributed
from graphrec_dist.errors import DataError
from graphrec_dist.evaluate import evaluate_model
from graphrec_dist.io_utils import write_text_atomic
from graphrec_dist.logging_utils import get_logger, setup_logging
from graphrec_dist.models.base import Recommender
from graphrec_dist.plots import plot_training_curves
from graphrec_dist.tracking import TensorBoardLog
from graphrec_dist.trainer import Trainer, TrainHooks, TrainResult, TrainState, metric_key

log = get_logger("train")

__all__ = ["TrainHooks", "TrainResult", "main", "profile_steps", "run_training"]


def load_data(cfg: Config, ctx: DistContext):
    """Rank 0 builds or validates the bundle; then every other rank loads it (after a barrier).
    With ``dist.sharding=users`` each rank keeps only its block of users (data.partition)."""
    sharded = cfg.dist.sharding == "users"
    bundle, path, message = None, None, None
    if ctx.is_main:
        try:
            if sharded:  # the whole bundle is never loaded here, once it is cut into partitions
                path = ensure_bundle(cfg.data)
                if not any(n % ctx.world_size == 0 for n in partition_counts(path)):
                    log.info("cutting %s into %d user partitions", path, ctx.world_size)
                    build_partitioned(cfg.data, ctx.world_size)  # streamed when it can be
            else:
                bundle = prepare_bundle(cfg.data)
                path = bundle.path
        except Exception as exc:  # told to the other ranks so they stop instead of hanging
            message = f"{type(exc).__name__}: {exc}"
            if not ctx.is_distributed:
                raise
    path, message = broadcast_object((str(path) if path else None, message), ctx)
    if message is not None:
        if ctx.is_main:
            raise DataError(message)
        raise DataError(f"rank 0 could not prepare the data: {message}")
    if sharded:
        return load_user_shard(path, ctx.rank, ctx.world_size)
    return bundle if ctx.is_main else load_bundle(path)


@contextlib.contextmanager
def threads(cfg: Config) -> Iterator[None]:
    """``train.num_threads`` for the duration of a run, then the caller's setting again."""
    before = torch.get_num_threads()
    # Two OpenMP threads on a box already busy spin-wait more than they compute (docs/TRAINING.md).
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_closed_form(cfg: Config, ctx: DistContext, model: Recommender, bundle, hooks: TrainHooks) -> TrainState:
    """Closed-form models: fit once (every rank), validate, save as both best and last."""
    start = time.perf_counter()
    model.fit(bundle, ctx)
    val = evaluate_model(model, bundle, "val", cfg.eval, ctx)
    row = {"epoch": 0, "step": 0, "fit_time_s": round(time.perf_counter() - start, 3),
           **{f"val_{k}": v for k, v in val.items()}, "best_epoch": 0}
    state = TrainState(epoch=1, best_metric=val[metric_key(cfg)], best_epoch=0, best_val=val, history=[row])
    path = None
    if ctx.is_main:
        blob = checkpoint.checkpoint_state(cfg, model, state, ctx.world_size, bundle_hash=bundle.content_hash())
        for name in (run_dir.BEST, run_dir.LAST):
            path = checkpoint.save_checkpoint(Path(cfg.run.out_dir) / name, blob)
        run_dir.write_history(cfg.run.out_dir, [row])
    barrier(ctx)
    if hooks.on_epoch_end:
        hooks.on_epoch_end(row, path)
    return state


def run_training(cfg: Config, ctx: DistContext, hooks: Optional[TrainHooks] = None) -> TrainResult:
    """Train ``cfg.model.name`` on ``cfg.data``, validate, keep the best, test it, write the outputs."""
    with threads(cfg):
        return _run(cfg, ctx, hooks or TrainHooks())


def _run(cfg: Config, ctx: DistContext, hooks: TrainHooks) -> TrainResult:
    out_dir = Path(cfg.run.out_dir)
    board = TensorBoardLog(out_dir, cfg.run.tensorboard, ctx.is_main)  # no package: every rank stops here
    hooks = board.wrap(hooks)
    bundle = load_data(cfg, ctx)
    model = run_dir.new_model(cfg, bundle, ctx.device)
    if hooks.on_start:
        hooks.on_start(model)
    trainer = None if model.kind == "closed_form" else Trainer(cfg, ctx, model, bundle, hooks)
    if trainer is not None:
        trainer.resume()  # a checkpoint it refuses stops the run before anything in out_dir changes
    if ctx.is_main:
        write_text_atomic(out_dir / run_dir.CONFIG, cfg.to_yaml())
    board.start(trainer.state.global_step if trainer is not None else 0)
    try:
        if trainer is None:
            state = fit_closed_form(cfg, ctx, model, bundle, hooks)
        else:
            state = trainer.fit()
            if trainer.best_model is not None:
                model.load_state_dict(trainer.best_model)
    finally:
        board.close()
    # eval.test=false (a grid point of graphrec-dist tune): chosen on validation, never tested
    test = evaluate_model(model, bundle, "test", cfg.eval, ctx) if cfg.eval.test else {}
    inductive = inductive_tests(model, bundle, cfg, ctx) if cfg.eval.test else {}
    result = TrainResult(out_dir, test, state.best_val, state.best_epoch, state.history, state.global_step,
                         state.stopped_early, model, inductive)
    if ctx.is_main:
        finish_run(cfg, result, bundle, ctx)
    barrier(ctx)
    return result


def inductive_tests(model: Recommender, bundle, cfg: Config, ctx: DistContext) -> dict[str, dict[str, float]]:
    """Validation and test metrics of the inductive protocols the bundle was built with
    (docs/EVALUATION.md) for the final model; the new-user ones only for models that score a user
    from a history without retraining."""
    out = {}
    for split in ("cold_val", "cold_test", "cold_user_val", "cold_user_test"):
        if len(bundle.split(split)) and (split in ("cold_val", "cold_test") or model.scores_new_users):
            out[split] = evaluate_model(model, bundle, split, cfg.eval, ctx)
    return out


def finish_run(cfg: Config, result: TrainResult, bundle, ctx: DistContext) -> None:
    """Rank 0: the result files, the curves PNG, and the closing summary on stdout."""
    out = result.out_dir
    plot_training_curves(result.history, out / run_dir.CURVES, title=f"{cfg.model.name} on {cfg.data.bundle_dir}",
                         metric=f"val_{metric_key(cfg)}")
    if not cfg.eval.test:
        print(f"\n{cfg.model.name}: best validation {metric_key(cfg)}={result.best_val.get(metric_key(cfg), 0):.4f} "
              f"(epoch {result.best_epoch}; eval.test=false: no test evaluation)\nartifacts in {out}/")
        sys.stdout.flush()
        return
    run_dir.write_results(out, cfg, result.test_metrics, result.best_epoch, result.inductive)
    shown = "  ".join(f"{k}={v:.4f}" for k, v in result.test_metrics.items() if "@" in k or k == "mrr")
    print(f"\n{cfg.model.name}: full-ranking test metrics ({int(result.test_metrics.get('num_users', 0))} users, "
          f"best epoch {result.best_epoch}):\n  {shown}")
    for split, metrics in result.inductive.items():
        if split.endswith("val"):
            continue
        shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith(("ndcg", "recall")))
        print(f"  {split} ({int(metrics.get('num_users', 0))} users): {shown}")
    names = [run_dir.CONFIG, run_dir.METRICS, run_dir.BEST, run_dir.LAST, run_dir.TEST_METRICS, run_dir.CURVES]
    print(f"artifacts in {out}/: {' '.join(names + ([run_dir.INDUCTIVE] if result.inductive else []))}")
    sys.stdout.flush()


def profile_steps(cfg: Config, steps: int = 200, ctx: Optional[DistContext] = None) -> dict[str, Any]:
    """Time ``steps`` training steps of ``cfg`` (one process, no evaluation), phase by phase.

    Sampling is the wait for the next batch (with ``num_workers`` > 0, only what the workers did
    not hide), plus the sampling a model does inside its forward pass (block sampling). Returns
    totals in seconds, seed edges per second and the implied epoch time.
    """
    with threads(cfg):
        return _profile(cfg, steps, ctx or DistContext())


def _profile(cfg: Config, steps: int, ctx: DistContext) -> dict[str, Any]:
    bundle = load_data(cfg, ctx)
    model = run_dir.new_model(cfg, bundle, ctx.device)
    times = {"sampling_s": 0.0, "forward_s": 0.0, "backward_s": 0.0, "optimizer_s": 0.0}
    sync = torch.cuda.synchronize if ctx.device.type == "cuda" else (lambda: None)
    clock = [0.0]

    def phase(name: str) -> None:  # Trainer.step calls it as each phase ends
        sync()
        now = time.perf_counter()
        times[f"{name}_s"] += now - clock[0]
        clock[0] = now

    trainer = Trainer(cfg, ctx, model, bundle, TrainHooks(on_phase=phase))
    module = trainer.wrap()
    it, done, seeds, epoch = iter(trainer.batches(0, 0)), 0, 0, 0
    for _ in range(steps):
        t0 = time.perf_counter()
        try:
            batch = next(it).to(ctx.device)
        except StopIteration:
            epoch += 1
            it = iter(trainer.batches(epoch, 0))
            batch = next(it).to(ctx.device)
        clock[0] = time.perf_counter()
        times["sampling_s"] += clock[0] - t0
        seeds += trainer.step(module, batch)[1]
        # A model that samples inside its forward pass (block sampling) says how long that took.
        inner = getattr(model, "last_sampling_s", 0.0)
        times["sampling_s"] += inner
        times["forward_s"] -= inner
        done += 1
    total = sum(times.values())
    return {"model": cfg.model.name, "users": bundle.num_users, "books": bundle.num_books,
            "train_edges": len(bundle.train), "steps": done, "batch_size": cfg.train.batch_size,
            "num_neighbors": list(cfg.train.num_neighbors), "num_workers": cfg.train.num_workers,
            "steps_per_epoch": trainer.steps, **{k: round(v, 4) for k, v in times.items()},
            "total_s": round(total, 4), "seed_edges_per_s": round(seeds / total, 1) if total else None,
            "est_epoch_s": round(total / max(done, 1) * trainer.steps, 1), "units": "seconds, totals over steps"}


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """``main``'s arguments; ``--launcher`` may sit before, among or after the overrides."""
    return parse_cli_args(build_parser(), argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphrec-dist train", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="YAML preset, e.g. configs/demo.yaml")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.epochs=3")
    parser.add_argument("--launcher", choices=["local", "torchrun", "ray"], default=None,
                        help="overrides dist.launcher (ray: start Ray Train workers)")
    return parser


def main(argv: Optional[list[str]] = None) -> TrainResult:
    """``graphrec-dist train`` / ``python -m graphrec_dist.train`` (also under torchrun)."""
    args = parse_args(argv)
    overrides = list(args.overrides) + ([f"dist.launcher={args.launcher}"] if args.launcher else [])
    cfg = load_config(args.config, overrides)
    if cfg.dist.launcher == "ray":  # Ray starts the workers, and each calls run_training
        return launch_ray.launch(cfg, run_training)
    ctx = init_distributed(cfg.dist.backend, cfg.dist.device)
    setup_logging(ctx.rank, cfg.run.log_level)
    try:
        return run_training(cfg, ctx)
    finally:
        cleanup(ctx)


if __name__ == "__main__":
    from graphrec_dist.cli import run_command

    sys.exit(run_command("train", sys.argv[1:]))
