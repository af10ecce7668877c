"""TensorBoard event files of a run (``run.tensorboard=true``), written by rank 0 only.

Rank 0 writes ``run.out_dir/tensorboard/`` with ``torch.utils.tensorboard.SummaryWriter`` (the
``tensorboard`` extra). Every series shares one x axis, the global step, so that a resumed run can
drop what the interrupted attempt wrote after its checkpoint (``purge_step``) and every curve lines
up with ``metrics.jsonl``'s ``step``:

    train/loss, train/lr     every step: rank 0's batch loss (its share of the batch under DDP, its
                             users' rows when sharded) and the learning rate after the step
    epoch/*                  every epoch: the loss over all ranks, epoch_time_s, edges_per_s, lr
    val/*                    every validation: val_ndcg@10 as val/ndcg@10, and the other metrics
    dist/*                   dist.sharding=users: all-reduce seconds and MiB per step, peak RSS (MiB)

Opt-in rather than on whenever the package imports: what a run folder holds should not depend on
what happens to be installed, and the suite and ``bench`` (hundreds of runs) need none of it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

from graphrec_dist.errors import ConfigError
from graphrec_dist.trainer import TrainHooks

TB_DIR = "tensorboard"
SHARDED_KEYS = ("allreduce_s_per_step", "allreduce_mb_per_step", "peak_rss_mib")
NOT_SERIES = ("epoch", "step", "best_epoch", "seed_edges")


def _summary_writer():
    """``SummaryWriter``, or a ConfigError that says how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError(f"run.tensorboard=true needs the tensorboard package ({exc}); install it with "
                          "pip install -e '.[tensorboard]', or set run.tensorboard=false") from None
    return SummaryWriter


def epoch_scalars(row: dict[str, Any]) -> dict[str, float]:
    """TensorBoard tag -> value of one ``metrics.jsonl`` row (numbers only)."""
    out = {}
    for key, value in row.items():
        if key in NOT_SERIES or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key.startswith("val_"):
            tag = f"val/{key[len('val_'):]}"
        else:
            tag = f"{'dist' if key in SHARDED_KEYS else 'epoch'}/{key}"
        out[tag] = float(value)
    return out


class TensorBoardLog:
    """The event files of one run. Every rank makes one (so a missing package stops every rank
    before training); only where ``main`` is true does it write."""

    def __init__(self, out_dir: str | Path, enabled: bool, main: bool):
        self.path = Path(out_dir) / TB_DIR
        self.active = enabled and main
        self._writer_class = _summary_writer() if enabled else None
        self._writer = None

    def start(self, step: int) -> None:
        """Open the writer at global step ``step`` (0, or the checkpoint's step where the run
        resumed). Events of an earlier attempt after ``step`` are purged, since the resumed run
        writes them again; a fresh start (0) purges a replaced run's events too."""
        if self.active and self._writer is None:
            self._writer = self._writer_class(str(self.path), purge_step=step + 1 if step else 0)

    def on_step(self, step: int, loss: float, lr: float) -> None:
        if self._writer is not None:
            self._writer.add_scalar("train/loss", loss, step)
            self._writer.add_scalar("train/lr", lr, step)

    def on_epoch(self, row: dict[str, Any]) -> None:
        if self._writer is not None:
            for tag, value in epoch_scalars(row).items():
                self._writer.add_scalar(tag, value, row["step"])
            self._writer.flush()  # an epoch's figures are on disk before the next can fail

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def wrap(self, hooks: TrainHooks) -> TrainHooks:
        """``hooks`` with this log's step and epoch callbacks run before the caller's own."""
        if not self.active:
            return hooks
        step_hook, epoch_hook = hooks.on_step, hooks.on_epoch_end

        def on_step(step: int, loss: float, lr: float) -> None:
            self.on_step(step, loss, lr)
            if step_hook:
                step_hook(step, loss, lr)

        def on_epoch_end(row: dict[str, Any], checkpoint: Optional[Path]) -> None:
            self.on_epoch(row)
            if epoch_hook:
                epoch_hook(row, checkpoint)

        return dataclasses.replace(hooks, on_step=on_step, on_epoch_end=on_epoch_end)
