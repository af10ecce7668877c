"""The checkpoint format: writing and reading checkpoint files atomically, the random states they
hold, the per-rank files and manifest of a user-sharded checkpoint, the checks a resume makes
against them, and :func:`load_run`, which reads a trained model back from a run folder.

A checkpoint is one ``torch.save`` file of a dict with at least ``model`` (the unwrapped model's
state) and ``config``; the trainer adds the optimizer, scheduler, its bookkeeping, every rank's
RNG states and the bundle's content hash (:func:`checkpoint_state`).

Under ``dist.sharding=users`` a checkpoint is several files: each rank writes its users' rows
and its optimizer state to ``last.step{S}.rank{r}of{W}.pt``, then rank 0 writes ``last.pt`` with
the replicated parameters and a ``sharding`` manifest naming those files. The manifest is renamed
into place last and older steps' files are removed only after it, so a kill at any moment leaves
a ``last.pt`` whose files are all there. Readers that want the whole model (``load_run``: evaluate,
recommend, serve, export) reassemble the user rows in rank order.
"""
from __future__ import annotations

import random
import zipfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from graphrec_dist.config import Config, apply_overrides, from_dict
from graphrec_dist.data.bundle import Bundle
from graphrec_dist.data.store import load_bundle
from graphrec_dist.distributed import DistContext, barrier
from graphrec_dist.errors import ConfigError, DataError, UserError
from graphrec_dist.io_utils import atomic_path
from graphrec_dist.models.base import Recommender
from graphrec_dist.run_dir import BEST, LAST, new_model


# -- files ---------------------------------------------------------------------------------
def save_checkpoint(path: str | Path, state: dict[str, Any],
                    before_rename: Optional[Callable[[Path], None]] = None) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + rename).

    ``before_rename(tmp)`` runs once the temp file is complete and before it replaces ``path``
    (a seam for fault tests that kill the process there)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        if before_rename is not None:
            before_rename(tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    what_to_do: str = "delete it or pass another checkpoint") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    A missing, truncated or garbled file is a DataError naming the file and ``what_to_do``. Every
    stored record's CRC-32 is checked first: torch.load itself does not, and a flipped byte in a
    tensor would otherwise load as silently wrong weights.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise ValueError(f"record {bad.split('/', 1)[-1]} fails its CRC check")
        # Our own files: they hold numpy RNG states and plain dicts, which weights_only refuses.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001  damaged bytes fail anywhere in zip or unpickling code
        reason = "not a complete zip archive" if isinstance(exc, zipfile.BadZipFile) else str(exc)[:200]
        raise DataError(f"checkpoint {path} is truncated or garbled ({reason}); {what_to_do}") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise DataError(f"checkpoint {path} is not a graphrec_dist checkpoint (no model/config); {what_to_do}")
    return state


def checkpoint_state(cfg: Config, model: Recommender, state: Any, world_size: int,
                     model_state: Optional[dict[str, Any]] = None, **extra) -> dict[str, Any]:
    """The one checkpoint format of every model kind: model (``model_state``, else the whole
    model's), config, trainer bookkeeping (``state``, the trainer's ``TrainState``), world size and
    ``bundle_hash`` (the data's :meth:`~graphrec_dist.data.bundle.Bundle.content_hash`), plus what
    gradient training adds (``optimizer``, ``scheduler``, ``rng``, ``loss_sums``; ``sharding``: the
    manifest of a user-sharded checkpoint)."""
    return {"model": model.state_dict() if model_state is None else model_state, "config": cfg.to_dict(),
            "trainer": asdict(state), "world_size": world_size, "bundle_hash": None,
            "optimizer": None, "scheduler": None, "rng": None, "loss_sums": None, **extra}


def shard_path(path: str | Path, step: int, rank: int, world_size: int) -> Path:
    """The file of rank ``rank``'s rows of the sharded checkpoint ``path`` written at ``step``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.step{step}.rank{rank}of{world_size}.pt")


def remove_stale_shards(path: str | Path, keep: list[str]) -> None:
    """Delete the per-rank files of earlier versions of the sharded checkpoint ``path``."""
    path = Path(path)
    for old in path.parent.glob(f"{path.stem}.step*.rank*of*.pt"):
        if old.name not in keep:
            old.unlink(missing_ok=True)


def shard_state(path: str | Path, state: dict[str, Any], rank: int, map_location: str | torch.device = "cpu",
                what_to_do: str = "delete it or pass another checkpoint") -> dict[str, Any]:
    """Rank ``rank``'s file of the sharded checkpoint whose main file ``path`` held ``state``."""
    files = state["sharding"]["files"]
    return load_checkpoint(Path(path).parent / files[rank], map_location=map_location, what_to_do=what_to_do)


def save_sharded(main: Path, cfg: Config, ctx: DistContext, model: Recommender, owned: set[str], bundle: Bundle,
                 state: Any, optimizer: torch.optim.Optimizer, scheduler: Any, rng: list, loss_sums: list,
                 data_hash: Callable[[], str], before_rename: Optional[Callable[[Path], None]] = None
                 ) -> Optional[Path]:
    """Write the user-sharded checkpoint ``main`` (this module's docstring): every rank its rows
    and optimizer state, then rank 0 the replicated part and the manifest (renamed last), then
    rank 0 drops older steps' files. ``data_hash()`` is the manifest's world-size-free hash of the
    data (:func:`graphrec_dist.elastic.data_hash`). Rank 0 gets ``main``'s path, the others None."""
    step, world = state.global_step, ctx.world_size
    model_state = model.state_dict()
    mine = {"model": {k: model_state[k] for k in owned}, "config": cfg.to_dict(),
            "optimizer": optimizer.state_dict(), "bundle_hash": bundle.content_hash(),
            "rows": [bundle.shard.start, bundle.shard.stop]}
    save_checkpoint(shard_path(main, step, ctx.rank, world), mine)
    barrier(ctx)
    path = None
    if ctx.is_main:
        files = [shard_path(main, step, r, world).name for r in range(world)]
        manifest = {"world_size": world, "num_users": bundle.shard.num_users, "owned": sorted(owned),
                    "files": files, "data_hash": data_hash()}
        blob = checkpoint_state(cfg, model, state, world, rng=rng, loss_sums=loss_sums,
                                scheduler=scheduler.state_dict() if scheduler else None,
                                model_state={k: v for k, v in model_state.items() if k not in owned},
                                sharding=manifest)
        path = save_checkpoint(main, blob, before_rename=before_rename)
        remove_stale_shards(main, files)
    barrier(ctx)
    return path


def assemble_model_state(path: str | Path, state: dict[str, Any], what_to_do: str) -> dict[str, Any]:
    """The whole model's state of a checkpoint: as stored, or for a sharded one its replicated
    part plus every rank's user rows concatenated in rank order (needs the whole user table in
    memory: users x dim x 4 bytes per owned table)."""
    if not state.get("sharding"):
        return state["model"]
    man = state["sharding"]
    parts = [shard_state(path, state, r, what_to_do=what_to_do)["model"] for r in range(man["world_size"])]
    model = dict(state["model"])
    for key in man["owned"]:
        model[key] = torch.cat([part[key] for part in parts])
    return model


def check_same_model(cfg: Config, state: dict[str, Any], path: Path, what_to_do: str) -> None:
    """A ConfigError when checkpoint ``state`` was trained with another ``model`` config than
    ``cfg``'s. The saved config is read with today's defaults and key names, so a checkpoint made
    before an option existed or was renamed still resumes."""
    try:
        saved = from_dict(state["config"]).model
    except ConfigError as exc:  # an option since removed, or a value no longer accepted
        raise ConfigError(f"train.resume: {path} was trained with a different 'model' config ({exc}); "
                          f"{what_to_do}") from None
    if saved != cfg.model:
        raise ConfigError(f"train.resume: {path} was trained with a different 'model' config; {what_to_do}")


def check_same_data(state: dict[str, Any], bundle: Bundle, path: Path, what_to_do: str) -> None:
    """A ConfigError when checkpoint ``state`` (read from ``path``) was trained on other data than
    ``bundle``: its recorded ``bundle_hash`` (:meth:`Bundle.content_hash`) differs. The message
    names both bundles and both hashes. Checkpoints from before the hash was recorded pass."""
    saved = state.get("bundle_hash")
    if saved is None or saved == bundle.content_hash():
        return
    saved_dir = (state["config"].get("data") or {}).get("bundle_dir")
    raise ConfigError(f"train.resume: {path} was trained on bundle {saved_dir} (content {saved}), but this run's "
                      f"bundle {bundle.path} holds other data (content {bundle.content_hash()}); {what_to_do}")


def check_mid_epoch_resume(cfg: Config, kind: str, state: dict[str, Any], path: Path, what_to_do: str) -> None:
    """A ConfigError for a mid-epoch checkpoint that a ``kind`` model cannot resume exactly: with
    ``train.sampler=pyg`` (kind ``sampled``) and loader workers, when saved or now, each worker draws
    neighbours and negatives from its own random stream, which no checkpoint holds. Each epoch starts
    every worker from a seed, so end-of-epoch checkpoints resume exactly."""
    saved = int((state["config"].get("train") or {}).get("num_workers", 0))
    step = state["trainer"]["step_in_epoch"]
    if kind == "sampled" and step > 0 and max(saved, cfg.train.num_workers) > 0:
        fix = "resume with train.num_workers=0 as it was saved, or " if saved == 0 else ""
        raise ConfigError(f"train.resume: {path} was saved mid-epoch (epoch {state['trainer']['epoch']}, step {step}),"
                          f" and train.sampler=pyg with loader workers (train.num_workers={saved} then, "
                          f"{cfg.train.num_workers} now) cannot resume mid-epoch exactly: the workers' random "
                          f"streams are not in checkpoints (end-of-epoch checkpoints resume exactly); {fix}"
                          f"{what_to_do}")


def resume_path(out_dir: str | Path, resume: str) -> Path | None:
    """The checkpoint ``train.resume`` points at: ``auto`` = out_dir/last.pt if present, ``never``."""
    if resume == "never":
        return None
    if resume == "auto":
        last = Path(out_dir) / LAST
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise UserError(f"train.resume={resume}: no such checkpoint file")
    return path


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU, CUDA if present, numpy, python)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned; its tensors may have been mapped to another device
    (a checkpoint loaded with ``map_location``), and torch takes RNG states as CPU byte tensors."""
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def load_run(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Config, Recommender, Bundle]:
    """(config, model with trained weights in eval mode, bundle) from a run folder (its best.pt,
    else last.pt) or a checkpoint file.

    ``overrides`` (``section.key=value``) apply on top of the saved config, e.g. a different
    ``data.bundle_dir``. The bundle is loaded from the config's ``data.bundle_dir``. The saved
    ``dist.device`` and ``dist.backend`` say where the run was trained, not where it is read: they
    are read as ``auto`` (a run trained on a GPU is evaluated on a CPU-only machine) unless an
    override names them.
    """
    path = Path(path)
    what_to_do = "delete it or pass another checkpoint"
    if path.is_dir():
        ckpt = path / BEST if (path / BEST).is_file() else path / LAST
        if not ckpt.is_file():
            raise DataError(f"run directory {path} holds no {BEST} or {LAST}")
        if ckpt.name == BEST:
            what_to_do = f"retrain the run, or use {path / LAST} (the last epoch's model) instead"
        path = ckpt
    state = load_checkpoint(path, what_to_do=what_to_do)
    cfg = from_dict(apply_overrides(state["config"], ["dist.device=auto", "dist.backend=auto", *overrides]))
    bundle = load_bundle(cfg.data.bundle_dir)
    model = new_model(cfg, bundle)
    try:
        model.load_state_dict(assemble_model_state(path, state, what_to_do))
    except RuntimeError as exc:  # e.g. another bundle's node counts: embedding tables of other sizes
        raise DataError(f"checkpoint {path} does not fit the bundle {cfg.data.bundle_dir} "
                        f"({mismatch_summary(exc)}); pass data.bundle_dir=<the bundle it was trained on>") from None
    model.eval()
    return cfg, model, bundle


def mismatch_summary(exc: Exception) -> str:
    """The first size mismatch of a load_state_dict error (its full text lists every tensor)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines if "size mismatch" in line or "Missing key" in line),
                  lines[0] if lines else "")
    return detail[:200]
