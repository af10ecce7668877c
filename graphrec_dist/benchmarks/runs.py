"""Training and evaluation runs made through the public CLI (``graphrec-dist train|evaluate``),
each in a child process so its wall time and peak RSS are its own.

A run lives in ``<out>/runs/<name>``. Sections that need the same run (the quality table and the
training comparison both train ``graphsage`` on the demo data) share it: a run is reused when its
key (the resolved config, launcher) matches and this invocation made it (any, with ``--reuse``).
A run made before an option existed still matches while the option is at its default.
"""
from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graphrec_dist.benchmarks.common import BenchError, python_cmd, run_child
from graphrec_dist.config import load_config
from graphrec_dist.errors import ConfigError
from graphrec_dist.io_utils import write_json_atomic
from graphrec_dist.run_dir import CONFIG, TEST_METRICS, read_history, read_json


def _trained(config_path: str | Path | None, overrides: Sequence[str]) -> dict[str, Any]:
    """What a run trains: its resolved config without the ``run`` section (where the run is
    written, how verbosely). A preset's text that its overrides replace is not in it: an edit of a
    preset's data section does not retrain runs that point at other data."""
    cfg = load_config(config_path, list(overrides)).to_dict()
    cfg.pop("run", None)
    return cfg


def _key(config_path: str | Path | None, overrides: Sequence[str], launcher: str) -> str:
    """A short hash of what a run trains (:func:`_trained`) and how it is launched."""
    blob = json.dumps([_trained(config_path, overrides), launcher], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _launcher_of(stamp: dict[str, Any]) -> str:
    """The launcher a stamp's run was made with; stamps written before it was stored have only the
    command to tell it by."""
    if "launcher" in stamp:
        return stamp["launcher"]
    command = stamp.get("record", {}).get("command", "")
    prefix = "torchrun --nproc_per_node="
    return f"torchrun={command[len(prefix):].split()[0]}" if command.startswith(prefix) else "torchrun=0"


def _trained_the_same(run_dir: Path, wanted: dict[str, Any]) -> bool:
    """Whether the run in ``run_dir`` trained ``wanted``, judged by the ``config.yaml`` it saved,
    read with today's defaults. An option added since the run was made takes its default there,
    which reproduces the behaviour from before the option; a value that differs (a changed default
    too, as ``config.yaml`` holds every value) or an option since removed means it did not."""
    try:
        trained = load_config(run_dir / CONFIG).to_dict()
    except ConfigError:  # no config.yaml, not YAML, or an option since removed
        return False
    trained.pop("run", None)
    return trained == wanted


def display_command(args: Sequence[str]) -> str:
    """The user-facing spelling of a ``graphrec-dist`` command."""
    return "graphrec-dist " + " ".join(shlex.quote(a) for a in args)


def train_run(root: str | Path, name: str, config_path: str | None, overrides: Sequence[str],
              timeout_s: float, invocation: str, reuse: bool = False, torchrun_nproc: int = 0) -> dict[str, Any]:
    """Train (or reuse) run ``name``; return its command, cost, per-epoch metrics and test metrics.

    A finished run with the same key is reused if this invocation made it, or any invocation with
    ``reuse``. ``torchrun_nproc`` > 0 launches ``python -m torch.distributed.run --nproc_per_node=N`` (gloo on
    CPU) instead of one process.
    """
    run_dir = Path(root) / "runs" / name
    launcher = f"torchrun={torchrun_nproc}"
    key = _key(config_path, overrides, launcher)
    args = ["train"] + ([config_path] if config_path else []) + list(overrides) + [
        f"run.out_dir={run_dir}", "run.progress=false"]
    stamp = run_dir / "bench_key.json"
    old = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if ((reuse or old.get("invocation") == invocation) and (run_dir / TEST_METRICS).is_file()
            and (old.get("key") == key or (_launcher_of(old) == launcher
                                           and _trained_the_same(run_dir, _trained(config_path, overrides))))):
        record = old["record"]
        record["reused"] = old.get("invocation") != invocation
        return _with_outputs(record, run_dir)
    # A stale run in the folder would be resumed (train.resume=auto): start from nothing.
    shutil.rmtree(run_dir, ignore_errors=True)
    if torchrun_nproc > 0:
        cmd = python_cmd("-m", "torch.distributed.run", f"--nproc_per_node={torchrun_nproc}",
                         "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "graphrec_dist.train",
                         *args[1:])
        shown = f"torchrun --nproc_per_node={torchrun_nproc} -m graphrec_dist.train " + " ".join(
            shlex.quote(a) for a in args[1:])
    else:
        cmd = python_cmd("-m", "graphrec_dist", *args)
        shown = display_command(args)
    res = run_child(cmd, timeout_s, Path(root) / "logs" / f"train-{name}.log")
    if res.returncode != 0:
        raise BenchError(f"training run '{name}' failed (exit code {res.returncode}): {shown}; "
                         f"see {res.log_path}.err")
    record = {"name": name, "command": shown, "config_path": config_path, "overrides": list(overrides),
              "run_dir": str(run_dir), "wall_s": round(res.wall_s, 2), "peak_rss_mb": round(res.peak_rss_mb, 1),
              "reused": False}
    write_json_atomic(stamp, {"key": key, "launcher": launcher, "invocation": invocation, "record": record})
    return _with_outputs(record, run_dir)


def _with_outputs(record: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    record["test_metrics"] = read_json(run_dir, TEST_METRICS)
    record["epochs"] = read_history(run_dir)
    return record


def evaluate_run(root: str | Path, run_dir: str | Path, overrides: Sequence[str], timeout_s: float,
                 tag: str, split: str = "test") -> dict[str, Any]:
    """``graphrec-dist evaluate --run DIR --split SPLIT overrides``: metrics, wall time, peak RSS."""
    args = ["evaluate", "--run", str(run_dir), "--split", split, *overrides]
    res = run_child(python_cmd("-m", "graphrec_dist", *args), timeout_s, Path(root) / "logs" / f"eval-{tag}.log")
    shown = display_command(args)
    if res.returncode != 0:
        raise BenchError(f"evaluation '{tag}' failed (exit code {res.returncode}): {shown}; see {res.log_path}.err")
    return {"command": shown, "metrics": _last_json_object(Path(res.log_path).read_text()),
            "wall_s": round(res.wall_s, 2), "peak_rss_mb": round(res.peak_rss_mb, 1)}


def _last_json_object(text: str) -> dict[str, Any]:
    """The JSON object a command printed on stdout (the whole text, or its last ``{...}`` block)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        start = text.rfind("\n{")
        return json.loads(text[start + 1:] if start >= 0 else text[text.find("{"):])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
