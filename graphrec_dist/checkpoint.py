"""Checkpoints: atomic save/load of everything a run needs to resume, and ``load_run`` for readers.

A checkpoint is one ``torch.save`` file holding the unwrapped model's state, optimizer, scheduler,
epoch/step counters, every rank's RNG states, the trainer's bookkeeping and the config. It is
written to a temporary name and renamed into place, so a crash leaves the old file or the new one.
"""
from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphrec_dist.config import Config, apply_overrides, from_dict
from graphrec_dist.errors import DataError, UserError
from graphrec_dist.io_utils import atomic_path

BEST = "best.pt"
LAST = "last.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; a missing or broken file is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        # Our own files: they hold numpy RNG states and plain dicts, which weights_only refuses.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise DataError(f"checkpoint {path} cannot be read ({exc}); delete it or pass another") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise DataError(f"checkpoint {path} is not a graphrec_dist checkpoint (no model/config)")
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
    if path.is_dir():
        ckpt = path / BEST if (path / BEST).is_file() else path / LAST
        if not ckpt.is_file():
            raise DataError(f"run directory {path} holds no {BEST} or {LAST}")
        path = ckpt
    state = load_checkpoint(path)
    cfg = _config_from_checkpoint(state, list(overrides))
    bundle = load_bundle(cfg.data.bundle_dir)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, bundle)
    model.load_state_dict(state["model"])
    model.eval()
    return cfg, model, bundle
