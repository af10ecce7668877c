"""Checkpoints: atomic save/load of everything a run needs to resume, and ``load_run`` for readers.

A checkpoint is one ``torch.save`` file holding the unwrapped model's state, optimizer, scheduler,
epoch/step counters, every rank's RNG states, the trainer's bookkeeping and the config. It is
written to a temporary name and renamed into place, so a crash leaves the old file or the new one.
"""
from __future__ import annotations

import random
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from graphrec_dist.config import Config, apply_overrides, from_dict
from graphrec_dist.errors import DataError, UserError
from graphrec_dist.io_utils import atomic_path

BEST = "best.pt"
LAST = "last.pt"


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
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _config_from_checkpoint(state: dict[str, Any], overrides: list[str]) -> Config:
    return from_dict(apply_overrides(state["config"], overrides))


def load_run(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Config, Any, Any]:
    """(config, model with trained weights, bundle) from a run directory (its best.pt) or a file.

    ``overrides`` (``section.key=value``) apply on top of the saved config, e.g. a different
    ``data.bundle_dir``. The bundle is loaded from the config's ``data.bundle_dir``.
    """
    from graphrec_dist.data.bundle import Bundle  # noqa: F401  (type only)
    from graphrec_dist.data.store import load_bundle
    from graphrec_dist.models import build_model

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
    cfg = _config_from_checkpoint(state, list(overrides))
    bundle = load_bundle(cfg.data.bundle_dir)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, bundle)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:  # e.g. another bundle's node counts: embedding tables of other sizes
        raise DataError(f"checkpoint {path} does not fit the bundle {cfg.data.bundle_dir} "
                        f"({mismatch_summary(exc)}); pass data.bundle_dir=<the bundle it was trained on>") from None
    model.eval()
    return cfg, model, bundle


def mismatch_summary(exc: Exception) -> str:
    """The first size mismatch of a load_state_dict error (its full text lists every tensor)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines if "size mismatch" in line or "Missing key" in line), lines[0] if lines else "")
    return detail[:200]
