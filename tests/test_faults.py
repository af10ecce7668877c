"""Real faults under torchrun: SIGKILL of one rank mid-epoch, and of rank 0 while it writes a
checkpoint. torchrun ends non-zero; the same command again resumes (``train.resume=auto``) and ends
exactly where an uninterrupted run of the same config ends.

The trainer's test-only ``debug.fail_mode`` stops the victim at a known point and has it write its
pid (``hang_rank{r}.pid``); the test then sends SIGKILL, so the steps lost are the same every run.
The default block sampler is used: ``train.sampler=pyg`` with ``train.num_workers>0`` does not
resume mid-epoch exactly (a restarted loader worker re-seeds from the epoch's start).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import bounded
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "debug.yaml"
RUN_TIMEOUT_S = 300
# debug.yaml on 2 ranks: 4 steps per rank and epoch, 2 epochs (8 steps). With a checkpoint every 2
# steps, last.pt is written after steps 2 (mid-epoch 0), 4 (end of epoch 0) and 6 (mid-epoch 1).
COMMON = ["train.checkpoint_every=2", "train.lr_schedule=cosine", "train.resume=auto"]
TIMING = ("epoch_time_s", "edges_per_s")  # wall-clock fields: the only ones allowed to differ
pytestmark = [pytest.mark.slow, pytest.mark.multiproc]


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("fault_data")
    return [f"data.raw_dir={root / 'raw'}", f"data.bundle_dir={root / 'bundle'}"]


def torchrun_cmd(out: Path, data_dirs: list[str], *extra: str) -> list[str]:
    # --standalone: torchrun binds its rendezvous store to a port the OS picks and holds it.
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--local-addr=127.0.0.1",
            "--nproc_per_node=2", "-m", "graphrec_dist.train", str(CONFIG), f"run.out_dir={out}",
            *data_dirs, *COMMON, *extra]


def outcome(out: Path) -> tuple[list[dict], dict]:
    """(per-epoch rows without wall-clock fields, test metrics) of a finished run."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    history = [{k: v for k, v in row.items() if k not in TIMING} for row in rows]
    return history, json.loads((out / "test_metrics.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dirs) -> tuple[list[dict], dict]:
    """The uninterrupted 2-rank run of the same config (also builds the data)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = bounded.run(torchrun_cmd(out, data_dirs), RUN_TIMEOUT_S, cwd=ROOT, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return outcome(out)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float) -> int:
    """The pid written to ``path``; fails (killing ``proc``'s tree) if it does not come in time."""
    deadline = time.monotonic() + timeout_s
    while not path.is_file():
        if proc.poll() is not None or time.monotonic() > deadline:
            bounded.kill_tree(proc.pid)
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"no {path.name} (exit {proc.returncode}):\n{err[-3000:]}")
        time.sleep(0.1)
    return int(path.read_text())


def _checkpoint_step(path: Path) -> tuple[int, int]:
    state = torch.load(path, map_location="cpu", weights_only=False)["trainer"]
    return state["global_step"], state["step_in_epoch"]


def _kill_then_resume(out: Path, cmd: list[str], victim: str) -> tuple[subprocess.Popen, str, float]:
    """Start ``cmd``, SIGKILL the rank that writes ``victim`` once it does; returns (the killed
    torchrun, its stderr, seconds from the kill to torchrun's exit)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = _wait_for(out / victim, proc, RUN_TIMEOUT_S)
    assert pid in bounded.descendants(proc.pid)  # a torchrun worker, not some other process
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    _, err = bounded.communicate_all([proc], RUN_TIMEOUT_S)[0]
    return proc, err, time.monotonic() - killed_at


def test_torchrun_rank_killed_mid_epoch_resumes_exactly(tmp_path, data_dirs, reference):
    out = tmp_path / "run"
    # Rank 1 stops after step 7 (mid-epoch 1) and is killed there; rank 0 runs on into step 8's
    # gradient all-reduce. The last checkpoint is step 6's, so step 7 is lost and redone.
    cmd = torchrun_cmd(out, data_dirs, "debug.fail_after_step=7", "debug.fail_mode=hang")
    proc, err, exit_s = _kill_then_resume(out, cmd, "hang_rank1.pid")
    assert proc.returncode != 0, err[-3000:]
    assert _checkpoint_step(out / "last.pt") == (6, 2)
    assert not (out / "test_metrics.json").exists()
    # The same command again: resumes from step 6 (a resumed run does not stop at step 7 again).
    start = time.monotonic()
    again = bounded.run(cmd, RUN_TIMEOUT_S, cwd=ROOT, env=_env())
    assert again.returncode == 0, again.stderr[-3000:]
    assert "at epoch 1 step 2" in again.stderr
    assert outcome(out) == reference
    print(f"killed rank 1 after step 7; torchrun exited {exit_s:.1f} s after the kill; "
          f"resume run {time.monotonic() - start:.1f} s; 1 step recomputed")


def test_rank0_killed_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, data_dirs, reference):
    out = tmp_path / "run"
    # Rank 0 has written step 6's checkpoint to its temp file and stops before the rename.
    cmd = torchrun_cmd(out, data_dirs, "debug.fail_after_step=6", "debug.fail_mode=hang_in_save")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = _wait_for(out / "hang_rank0.pid", proc, RUN_TIMEOUT_S)
    temp = list(out.glob(".last.pt.*.tmp"))
    assert len(temp) == 1 and _checkpoint_step(temp[0]) == (6, 2)  # the new file is complete
    before = (out / "last.pt").read_bytes()
    os.kill(pid, signal.SIGKILL)
    _, err = bounded.communicate_all([proc], RUN_TIMEOUT_S)[0]
    assert proc.returncode != 0, err[-3000:]
    # The previous checkpoint (end of epoch 0) is in place, byte for byte, and loads.
    assert (out / "last.pt").read_bytes() == before
    assert _checkpoint_step(out / "last.pt") == (4, 0)
    # The same command again: resumes from step 4 (a resumed run does not stop at step 6 again).
    again = bounded.run(cmd, RUN_TIMEOUT_S, cwd=ROOT, env=_env())
    assert again.returncode == 0, again.stderr[-3000:]
    assert "at epoch 1 step 0" in again.stderr
    assert outcome(out) == reference
