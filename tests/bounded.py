"""Bounded waits for the processes a test starts: past the deadline, the whole tree is killed.

``subprocess.run(timeout=...)`` kills only the child it started. torchrun starts each worker in a
session of its own, so the workers of a killed torchrun would keep running (and holding ports and
CPU) after the test had failed. Here the tree is read from /proc before anything is killed.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:  # exited while we looked
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # "pid (comm) state ppid ..."; comm may hold spaces
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(0), [])
        out += kids
        todo += kids
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants (listed first: once a parent dies they are re-parented)."""
    for target in [pid, *descendants(pid)]:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass


def communicate_all(procs: Sequence[subprocess.Popen], timeout_s: float) -> list[tuple[str, str]]:
    """(stdout, stderr) of every process, all within one deadline. On timeout (or any error here)
    each unfinished process is killed with its descendants and the test fails."""
    deadline = time.monotonic() + timeout_s
    try:
        return [p.communicate(timeout=max(0.0, deadline - time.monotonic())) for p in procs]
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                kill_tree(p.pid)
    tails = []
    for p in procs:
        try:
            tails.append((p.communicate(timeout=30)[1] or "")[-2000:])
        except subprocess.TimeoutExpired:  # a descendant that escaped still holds the pipe
            tails.append("")
    pytest.fail(f"{len(procs)} process(es) did not finish in {timeout_s:.0f} s; killed with their children\n"
                + "\n".join(tails))


def run(cmd: Sequence[str], timeout_s: float, **popen_kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` whose timeout kills the whole tree."""
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_kwargs)
    out, err = communicate_all([proc], timeout_s)[0]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
