"""Shared pieces of the benchmark suite: the machine description, medians of repeats, section JSON,
and running a heavy stage in a child process to read its wall time and peak RSS.

Every heavy stage runs in its own process so that one stage's memory never counts against the
next and the parent (the ``bench`` command) stays small: peak RSS comes from ``os.wait4``'s
rusage of that child (``ru_maxrss``: the largest resident set of the child or of any descendant it
waited for).
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from graphrec_dist.errors import UserError
from graphrec_dist.io_utils import write_json_atomic

SCHEMA_VERSION = 1
GOODBOOKS_USERS = 53_424  # users in Goodbooks-10k ratings.csv: the 100% point of every scale


class BenchError(UserError):
    """A benchmark stage failed (its child process exited non-zero); the message says which."""


def median(values: Sequence[float]) -> float:
    """Median of repeats (these machines are shared and noisy: one run is not a figure)."""
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def repeat_timed(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _version(dist_name: str) -> str | None:
    try:
        return importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None


def sampling_backends() -> dict[str, str | None]:
    """Installed PyG neighbour-sampling backends and their versions (None = not installed)."""
    return {"pyg-lib": _version("pyg-lib") or _version("pyg_lib"), "torch-sparse": _version("torch-sparse")}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return None


def git_commit(repo: str | Path = ".") -> str:
    """``HEAD``'s short hash, with ``+dirty`` when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                              text=True, timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, RAM, load, library versions, backends."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "ram_gb": _ram_gb(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_geometric": _version("torch-geometric") or _version("torch_geometric"),
        "torch_scatter": _version("torch-scatter"),
        "numpy": _version("numpy"),
        "sampling_backends": sampling_backends(),
        "cuda": torch.cuda.is_available(),
        "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "git_commit": git_commit(),
    }


def section_payload(name: str, mode: str, command: str, results: dict[str, Any]) -> dict[str, Any]:
    """The JSON of one section: results plus what is needed to compare it across commits."""
    return {
        "schema": SCHEMA_VERSION,
        "section": name,
        "mode": mode,
        "command": command,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "results": results,
    }


def write_section(out_dir: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``out_dir/<section>.json``."""
    path = Path(out_dir) / f"{payload['section']}.json"
    write_json_atomic(path, payload)
    return path


def read_section(out_dir: str | Path, name: str) -> dict[str, Any] | None:
    """The section's JSON, or None when it has not been run into ``out_dir``."""
    path = Path(out_dir) / f"{name}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def carried_models(plan: Any, section: str, trained: dict[str, Any], match: dict[str, Any]) -> dict[str, Any]:
    """``bench --models``: the rows of the models this invocation did not train, taken from the
    section's earlier JSON in ``plan.out_dir`` when it was measured alike: the same values of the
    result keys in ``match`` (data, seeds) and the same ``--set`` overrides. Each row keeps
    ``measured_at``, when its runs were made. Empty without ``--models``. (``plan``: a BenchPlan;
    not annotated as one because plan.py imports this module.)"""
    old = read_section(plan.out_dir, section) if plan.carry_over else None
    if not old:
        return {}
    res = old["results"]
    if (any(res.get(k) != v for k, v in match.items())
            or res.get("plan", {}).get("train_overrides", []) != list(plan.train_overrides)):
        return {}
    return {m: {**row, "measured_at": row.get("measured_at", old["finished_at"])}
            for m, row in res.get("models", {}).items() if m not in trained}


@dataclass
class ChildResult:
    """How a child process ended and what it cost."""

    returncode: int
    wall_s: float
    peak_rss_mb: float
    log_path: Path | None


def run_child(cmd: Sequence[str], timeout_s: float, log_path: str | Path | None = None,
              env: dict[str, str] | None = None) -> ChildResult:
    """Run ``cmd``; return its exit code, wall seconds and peak RSS (MiB) from ``os.wait4``.

    stdout goes to ``log_path`` and stderr to ``log_path`` + ``.err`` (or both are discarded). On
    timeout the child's process group is killed and the result has return code -9.
    """
    log = Path(log_path) if log_path else None
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "w") if log else subprocess.DEVNULL
    err = open(str(log) + ".err", "w") if log else subprocess.DEVNULL
    full_env = {**os.environ, **(env or {})}
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, env=full_env, start_new_session=True)
        status, rusage = _wait_with_timeout(proc.pid, timeout_s)
    finally:
        if log:
            out.close()
            err.close()
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status) if status is not None else -9
    proc.returncode = code  # reaped by wait4 already; keep Popen from waiting again
    return ChildResult(code, wall, rusage.ru_maxrss / 1024.0 if rusage else 0.0, log)


def _wait_with_timeout(pid: int, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while True:
        got, status, rusage = os.wait4(pid, os.WNOHANG)
        if got == pid:
            return status, rusage
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, 9)
            except ProcessLookupError:
                pass
            _, status, rusage = os.wait4(pid, 0)
            return None, rusage
        time.sleep(0.05)


def python_cmd(*args: str) -> list[str]:
    """This interpreter running ``args`` (so children use the same virtual environment)."""
    return [sys.executable, *args]


def call_in_child(target: str, kwargs: dict[str, Any], work_dir: str | Path, timeout_s: float,
                  tag: str) -> dict[str, Any]:
    """Run ``module:function(**kwargs)`` in a fresh Python process; return its dict result.

    The result gains ``child_wall_s`` and ``child_peak_rss_mb``. The child's log is
    ``work_dir/logs/<tag>.log``; a failure raises :class:`BenchError` naming the stage and log.
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{tag}.", suffix=".json", dir=work)
    os.close(fd)
    args_path, out_path = Path(tmp), work / f".{tag}.out.json"
    try:
        args_path.write_text(json.dumps(kwargs))
        out_path.unlink(missing_ok=True)
        res = run_child(python_cmd("-m", "graphrec_dist.benchmarks.child", target, str(args_path), str(out_path)),
                        timeout_s, work / "logs" / f"{tag}.log")
        if res.returncode != 0 or not out_path.is_file():
            raise BenchError(f"benchmark stage '{tag}' ({target}) failed with exit code {res.returncode}; "
                             f"see {res.log_path}.err")
        result = json.loads(out_path.read_text())
    finally:
        args_path.unlink(missing_ok=True)
        out_path.unlink(missing_ok=True)
    result["child_wall_s"] = round(res.wall_s, 3)
    result["child_peak_rss_mb"] = round(res.peak_rss_mb, 1)
    return result
