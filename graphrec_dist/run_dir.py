"""The run folder (``run.out_dir``): what a run writes there, under which names, and how readers
load it back. Rank 0 writes every file, each atomically (temporary name + rename).

    config.yaml             the run's full config, written once a resume checkpoint was accepted
    metrics.jsonl           one row per epoch: loss, timing, lr, ``val_*`` metrics, best_epoch
    last.pt, best.pt        checkpoints: the latest state (to resume from) and the best model
    test_metrics.json       the best model's test metrics, with ``model``, ``best_epoch``, ``split``
    inductive_metrics.json  the cold-item / new-user protocols, when the bundle was built with them
    training_curves.png     loss and validation curves (:mod:`graphrec_dist.plots`)
    tensorboard/            TensorBoard event files, with ``run.tensorboard=true`` (:mod:`graphrec_dist.tracking`)

The checkpoint files' format, and reading a run back (``load_run``), are :mod:`graphrec_dist.checkpoint`'s.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from graphrec_dist.config import Config
from graphrec_dist.data.bundle import Bundle
from graphrec_dist.io_utils import write_json_atomic, write_text_atomic
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
