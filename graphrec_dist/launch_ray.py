"""Ray Train launcher: the same ``run_training`` on Ray workers, with restarts from Ray checkpoints.

The driver (``launch``) joins or starts Ray and runs a ``TorchTrainer``; Ray starts the workers and
their torch.distributed group (gloo on CPU, nccl on GPU). Each worker (``train_worker``) takes its
rank, world size and device from Ray's context, calls the ``run_training`` it was given
(:func:`graphrec_dist.train.run_training`), and, through :class:`~graphrec_dist.trainer.TrainHooks`,
reports every epoch's metrics with a checkpoint (``last.pt`` + ``best.pt``) to ``ray.train.report``
(also every mid-epoch checkpoint of ``train.checkpoint_every``) and resumes from
``ray.train.get_checkpoint()`` after a restart. Ray is an optional dependency (the ``ray`` extra),
so it is imported only when a function here runs.

Usage: ``graphrec-dist train CONFIG --launcher ray`` or ``python launch/ray_train.py CONFIG [key=value ...]``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch

from graphrec_dist import checkpoint, run_dir
from graphrec_dist.config import Config, from_dict
from graphrec_dist.distributed import DistContext, launcher_context
from graphrec_dist.errors import ConfigError, UserError
from graphrec_dist.logging_utils import get_logger, setup_logging
from graphrec_dist.trainer import TrainHooks, TrainResult

RunTraining = Callable[[Config, DistContext, TrainHooks], TrainResult]

log = get_logger("ray")
FINAL = "final"  # the metrics key that marks the report made after the test evaluation
STEP_FILE = "ray_step.json"


def _import_ray():
    try:
        import ray
        import ray.train  # noqa: F401
        import ray.train.torch  # noqa: F401
    except ImportError as exc:
        raise UserError(f"the Ray launcher needs Ray Train ({exc}); install it with: pip install -e '.[ray]'") from None
    return ray


# -- driver side ---------------------------------------------------------------------------------
def _absolute(path: Optional[str]) -> Optional[str]:
    """Driver-relative paths made absolute, since Ray workers may run in another directory."""
    if path is None or "://" in path:
        return path
    return str(Path(path).expanduser().resolve())


def resolve_paths(cfg: Config) -> Config:
    """A copy of ``cfg`` whose file paths (data, run, resume, storage) are absolute."""
    data = dataclasses.replace(cfg.data, raw_dir=_absolute(cfg.data.raw_dir),
                               bundle_dir=_absolute(cfg.data.bundle_dir), csv_spec=_absolute(cfg.data.csv_spec),
                               books_from=_absolute(cfg.data.books_from))
    resume = cfg.train.resume if cfg.train.resume in ("auto", "never") else _absolute(cfg.train.resume)
    storage = _absolute(cfg.dist.storage_path or str(Path(cfg.run.out_dir) / "ray"))
    return dataclasses.replace(cfg, data=data, train=dataclasses.replace(cfg.train, resume=resume),
                               dist=dataclasses.replace(cfg.dist, storage_path=storage),
                               run=dataclasses.replace(cfg.run, out_dir=_absolute(cfg.run.out_dir)))


def start_ray(address: Optional[str]) -> bool:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``; a local one is started when there is none).

    Returns True when this call connected (so the caller disconnects), False when Ray was already up.
    """
    ray = _import_ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"logging_level": "WARNING"}
    if address is None and "RAY_ADDRESS" not in os.environ:
        kwargs["include_dashboard"] = False  # a private local Ray needs no web UI
    ray.init(address=address, **kwargs)
    return True


def build_trainer(cfg: Config, run_training: RunTraining):
    """The ``TorchTrainer`` that runs ``run_training`` for ``cfg`` (paths already absolute, see
    :func:`resolve_paths`)."""
    _import_ray()
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    dc = cfg.dist
    if dc.use_gpu and dc.device == "cpu":
        raise ConfigError("config keys 'dist.use_gpu=true' and 'dist.device=cpu' contradict each other")
    # dist.min_workers: Ray Train's elastic scaling restarts a failed group on as many workers as
    # the cluster has left (at least min_workers), and grows it again when nodes come back.
    workers = dc.num_workers if dc.min_workers is None else (dc.min_workers, dc.num_workers)
    scaling = ScalingConfig(num_workers=workers, use_gpu=dc.use_gpu,
                            resources_per_worker={"CPU": dc.cpus_per_worker, **({"GPU": 1} if dc.use_gpu else {})})
    run = RunConfig(name=f"{Path(cfg.run.out_dir).name}_{time.strftime('%Y-%m-%d_%H-%M-%S')}",
                    storage_path=dc.storage_path, failure_config=FailureConfig(max_failures=dc.max_failures),
                    checkpoint_config=CheckpointConfig(num_to_keep=2))
    torch_config = TorchConfig(backend=None if dc.backend == "auto" else dc.backend)
    return TorchTrainer(train_worker, train_loop_config={"cfg": cfg.to_dict(), "run_training": run_training},
                        torch_config=torch_config,
                        scaling_config=scaling, run_config=run)


def fit_on_ray(cfg: Config, run_training: RunTraining):
    """Run ``run_training(cfg)`` on ``dist.num_workers`` Ray workers; returns Ray's ``Result`` (metrics of the
    final report, the final checkpoint, the run's storage path)."""
    cfg = resolve_paths(cfg)
    connected = start_ray(cfg.dist.ray_address)
    try:
        trainer = build_trainer(cfg, run_training)
        log.info("Ray Train: %d workers, storage %s", cfg.dist.num_workers, cfg.dist.storage_path)
        result = _fit(trainer)
    finally:
        if connected:
            _import_ray().shutdown()
    if not (result.metrics or {}).get(FINAL):
        raise RuntimeError(f"Ray Train finished without the final report (last metrics: {result.metrics})")
    log.info("Ray Train run at %s; final checkpoint %s", result.path, result.checkpoint.path)
    return result


def to_train_result(cfg: Config, result) -> TrainResult:
    """The :class:`TrainResult` (without the model) that rank 0 reported last."""
    final = result.metrics
    return TrainResult(Path(_absolute(cfg.run.out_dir)), final["test"], final["best_val"], final["best_epoch"],
                       final["history"], final["step"], final["stopped_early"])


def launch(cfg: Config, run_training: RunTraining) -> TrainResult:
    """``graphrec-dist train --launcher ray``: train on Ray and return rank 0's :class:`TrainResult`."""
    setup_logging(0, cfg.run.log_level)
    return to_train_result(cfg, fit_on_ray(cfg, run_training))


def _fit(trainer):
    """``trainer.fit()``; a user error raised in a worker comes back as that user error (exit code 2)."""
    from ray.train import TrainingFailedError

    try:
        return trainer.fit()
    except TrainingFailedError as exc:
        for failure in getattr(exc, "worker_failures", {}).values():
            cause = failure
            while cause is not None and not isinstance(cause, UserError):
                cause = cause.__cause__
            if isinstance(cause, UserError):
                raise type(cause)(str(cause)) from None
        raise


# -- worker side ---------------------------------------------------------------------------------
def worker_context(device: str = "auto") -> DistContext:
    """This worker's :class:`DistContext` from Ray's context; Ray owns (and ends) the process group."""
    ray = _import_ray()
    rc = ray.train.get_context()
    dev = torch.device("cpu") if device == "cpu" else ray.train.torch.get_device()
    if device == "cuda" and dev.type != "cuda":
        raise ConfigError("config key 'dist.device=cuda': this Ray worker has no GPU (set dist.use_gpu=true)")
    return launcher_context(rc.get_world_rank(), rc.get_world_size(), rc.get_local_rank(), dev)


def restore_checkpoint(cfg: Config) -> tuple[Optional[Path], Optional[Path]]:
    """(checkpoint file to resume from, local folder to delete afterwards).

    After a restart, Ray's latest checkpoint, copied to a local folder on every worker; on the
    first attempt, whatever ``train.resume`` names (as under torchrun).
    """
    reported = _import_ray().train.get_checkpoint()
    if reported is None:
        return checkpoint.resume_path(cfg.run.out_dir, cfg.train.resume), None
    local = Path(tempfile.mkdtemp(prefix="graphrec-ray-resume-"))
    reported.to_directory(str(local))
    return local / run_dir.LAST, local


def reported_step(folder: Optional[Path]) -> Optional[int]:
    """The global step of a checkpoint folder that :func:`report` wrote (None without one)."""
    marker = folder / STEP_FILE if folder is not None else None
    return json.loads(marker.read_text())["step"] if marker is not None and marker.is_file() else None


def report(metrics: dict[str, Any], checkpoint_file: Optional[Path]) -> None:
    """``ray.train.report`` on every rank; rank 0 (the one holding a file) attaches last.pt + best.pt.

    The folder also holds ``ray_step.json`` (the global step), so a restarted run can say where it
    resumed without loading the checkpoint.
    """
    ray = _import_ray()
    if checkpoint_file is None:
        ray.train.report(metrics)
        return
    folder = Path(checkpoint_file).parent
    # Staged beside the files so that a hard link works; Ray copies the folder to storage.
    with tempfile.TemporaryDirectory(prefix=".ray-report-", dir=folder, ignore_cleanup_errors=True) as stage:
        for name in (run_dir.LAST, run_dir.BEST):
            if (folder / name).is_file():
                _link_or_copy(folder / name, Path(stage) / name)
                # dist.sharding=users: the ranks' files of user rows that the manifest names (only
                # the current step's are left beside it; on one node, or a shared run.out_dir).
                for part in folder.glob(f"{Path(name).stem}.step*.rank*of*.pt"):
                    _link_or_copy(part, Path(stage) / part.name)
        (Path(stage) / STEP_FILE).write_text(json.dumps({"step": metrics.get("step")}))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(stage))


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)


def train_worker(loop_config: dict[str, Any]) -> None:
    """The per-worker function: the shared ``run_training`` with Ray's rank, device and reporting."""
    cfg = from_dict(loop_config["cfg"])
    ctx = worker_context(cfg.dist.device)
    setup_logging(ctx.rank, cfg.run.log_level)
    resume, local = restore_checkpoint(cfg)
    resumed_at = reported_step(local)
    if resumed_at is not None:
        log.info("restarted by Ray Train: resuming from the checkpoint of global step %d", resumed_at)
    if resume is not None and cfg.debug.fail_after_step is not None:
        # The injected fault is for the first attempt only, so that the restarted group completes.
        cfg = dataclasses.replace(cfg, debug=dataclasses.replace(cfg.debug, fail_after_step=None))
    # Mid-epoch checkpoints go to Ray too, so a restart loses at most train.checkpoint_every steps.
    hooks = TrainHooks(resume_from=lambda: resume, on_epoch_end=report, on_checkpoint=report)
    try:
        result = loop_config["run_training"](cfg, ctx, hooks)
    finally:
        if local is not None:
            shutil.rmtree(local, ignore_errors=True)
    last = Path(cfg.run.out_dir) / run_dir.LAST
    final = {FINAL: True, "step": result.global_step, "resumed_at_step": resumed_at, "test": result.test_metrics,
             "best_val": result.best_val, "best_epoch": result.best_epoch, "history": result.history,
             "stopped_early": result.stopped_early}
    report(final, last if ctx.is_main and last.is_file() else None)
