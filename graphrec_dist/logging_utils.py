"""Stdlib logging with a rank prefix; progress bars only on rank 0."""
from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

LOGGER_NAME = "graphrec_dist"


def setup_logging(rank: int = 0, level: str = "INFO") -> logging.Logger:
    """Configure the package logger: every rank logs warnings, rank 0 logs at ``level``."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level if rank == 0 else "WARNING")
    logger.propagate = False
    return logger


def get_logger(name: str | None = None) -> logging.Logger:
    return logging.getLogger(LOGGER_NAME if name is None else f"{LOGGER_NAME}.{name}")


def progress(items: Iterable[T], enabled: bool, **kwargs) -> Iterable[T]:
    """Wrap ``items`` in a tqdm bar when ``enabled`` (rank 0 with run.progress), else return them."""
    if not enabled:
        return items
    return tqdm(items, dynamic_ncols=True, leave=False, file=sys.stderr, **kwargs)
