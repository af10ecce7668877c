"""The run folder (``run.out_dir``): what a run writes there, under which names, and how readers
load it back. Rank 0 writes every file, each atomically (temporary name + rename).

    config.yaml             the run's full config, written once a resume checkpoint was accepted
    metrics.jsonl           one row per epoch: loss, timing, lr, ``val_*`` metrics, best_epoch
    last.pt, best.pt        checkpoints: the latest state (to resume from) and the best model
    test_metrics.json       the best model's test metrics, with ``model``, ``best_epoch``, ``split``
    inductive_metrics.json  the cold-item / new-user protocols, when the bundle was built with them
    training_curves.png     loss and validation curves (:mod:`graphrec_dist.plots`)
    tensorboard/            TensorBoard event files, with ``run.tensorboard=true`` (:mod:`graphrec_dist.tracking`)

A checkpoint is one ``torch.save`` file of a dict with at least ``model`` (the unwrapped model's
state) and ``config``; the trainer adds the optimizer, scheduler, its bookkeeping, every rank's
RNG states and the bundle's content hash (:meth:`graphrec_dist.trainer.Trainer.save`).

Under ``dist.sharding=users`` a checkpoint is several files: each rank writes its users' rows
and its optimizer state to ``last.step{S}.rank{r}of{W}.pt``, then rank 0 writes ``last.pt`` with
the replicated parameters and a ``sharding`` manifest naming those files. The manifest is renamed
into place last and older steps' files are removed only after it, so a kill at any moment leaves
a ``last.pt`` whose files are all there. Readers that want the whole model (``load_run``: evaluate,
recommend, serve, export) reassemble the user rows in rank order.
"""
from __future__ import annotations

import json
import random
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from graphrec_dist.config import Config, apply_overrides, from_dict
from graphrec_dist.data.bundle import Bundle
from graphrec_dist.data.store import load_bundle
from graphrec_dist.errors import ConfigError, DataError, UserError
from graphrec_dist.io_utils import atomic_path, write_json_atomic, write_text_atomic
from graphrec_dist.models import build_model
from graphrec_dist.models.base import Recommender

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
BEST = "best.pt"
LAST = "last.pt"
TEST_METRICS = "test_metrics.json"
INDUCTIVE = "inductive_metrics.json"
CURVES = "training_curves.png"


def new_model(cfg: Config, bundle: Bundle, device: torch.device | str = "cpu") -> Recommender:
    """``cfg.model`` built for ``bundle`` from ``train.seed`` (the same initial weights on every rank),
    on ``device``; a ConfigError when the model cannot run there."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, bundle)
    model.check_device(torch.device(device))
    return model.to(device)


# -- results -------------------------------------------------------------------------------------
def write_history(out_dir: str | Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(Path(out_dir) / METRICS, "".join(json.dumps(r) + "\n" for r in rows))


def read_history(out_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` (none without the file; a torn last line is skipped)."""
    path = Path(out_dir) / METRICS
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def write_results(out_dir: str | Path, cfg: Config, test: dict[str, float], best_epoch: int,
                  inductive: dict[str, dict[str, float]]) -> None:
    """``test_metrics.json`` and, when there are any, ``inductive_metrics.json``."""
    write_json_atomic(Path(out_dir) / TEST_METRICS, {**test, "model": cfg.model.name, "best_epoch": best_epoch,
                                                     "split": "test"})
    if inductive:
        write_json_atomic(Path(out_dir) / INDUCTIVE, {"model": cfg.model.name, **inductive})


def read_json(out_dir: str | Path, name: str) -> dict[str, Any]:
    """A JSON result file of the run (``TEST_METRICS``, ``INDUCTIVE``); {} when it is missing."""
    path = Path(out_dir) / name
    return json.loads(path.read_text()) if path.is_file() else {}


# -- checkpoints ---------------------------------------------------------------------------------
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
