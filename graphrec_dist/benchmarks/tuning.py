"""Baselines tuned on the data they are compared on, by the bench itself.

A model whose preset declares ``tune.grid`` gets its values from ``graphrec-dist tune`` (a child
process) on the validation split of the very data of the table row: closed forms (seconds a point)
on every split seed, gradient-trained models on the table's first split seed, the choice then
fixed for the other seeds. The row's runs train with the chosen values; the table prints the grid
and the choice. A baseline with settings and no grid is refused, so a table cannot show a value
carried over from another dataset. The product's own model (graphsage) is the exception by design:
its shipped preset is what is judged, on data nobody tunes it to.
"""
from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from graphrec_dist.benchmarks.common import BenchError, python_cmd, run_child
from graphrec_dist.benchmarks.runs import _key, display_command
from graphrec_dist.config import load_config, parse_grid
from graphrec_dist.io_utils import write_json_atomic
from graphrec_dist.models import CLOSED_FORM_MODELS
from graphrec_dist.tune import RESULT

# Models that rightly run without a grid: nothing to tune, or the product judged as shipped.
SHIPPED = "shipped preset (not tuned per dataset)"
NO_GRID = {"popularity": "nothing to tune", "content_knn": "nothing to tune", "graphsage": SHIPPED,
           "graphsage_ui": SHIPPED}

_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)  # one tune per folder at a time
_locks_guard = threading.Lock()


def tune_run(root: str | Path, name: str, preset: str, overrides: Sequence[str], timeout_s: float,
             invocation: str, reuse: bool = False) -> dict[str, Any]:
    """``graphrec-dist tune PRESET overrides --out <root>/tune/<name>`` in a child (or its earlier
    tune.json, under the reuse rule of :func:`graphrec_dist.benchmarks.runs.train_run`)."""
    out = Path(root) / "tune" / name
    with _locks_guard:
        lock = _locks[str(out)]
    with lock:
        key = _key(preset, overrides, "tune")
        stamp = out / "bench_key.json"
        old = json.loads(stamp.read_text()) if stamp.is_file() else {}
        if (out / RESULT).is_file() and old.get("key") == key and (reuse or old.get("invocation") == invocation):
            return {**json.loads((out / RESULT).read_text()), "command": old["command"]}
        args = ["tune", preset, *overrides, "--out", str(out)]
        res = run_child(python_cmd("-m", "graphrec_dist", *args), timeout_s, Path(root) / "logs" / f"tune-{name}.log")
        shown = display_command(args)
        if res.returncode != 0:
            raise BenchError(f"tuning '{name}' failed (exit code {res.returncode}): {shown}; see {res.log_path}.err")
        record = json.loads((out / RESULT).read_text())
        if "chosen" not in record:
            raise BenchError(f"tuning '{name}' wrote no choice: {out / RESULT}")
        write_json_atomic(stamp, {"key": key, "invocation": invocation, "command": shown})
        return {**record, "command": shown}


def tuned_overrides(plan: Any, model: str, preset: str, select: list[str], data_for_seed: Callable[[int], list[str]],
                    seed: int, first_seed: int, label: str) -> tuple[list[str], dict[str, Any]]:
    """The overrides chosen for ``model`` on split ``seed`` and what the table says of them.

    ``select``: the overrides that pick the model on its preset; ``data_for_seed(s)``: those that
    point a run at split s of the table's data (a gradient-trained model is tuned on split
    ``first_seed``); ``label`` names the tune folder. (``plan``: a BenchPlan; not annotated as one
    because plan.py imports common.py, which this module imports.)"""
    grid = parse_grid(load_config(preset, select).tune.grid)
    if not grid:
        if model not in NO_GRID:
            raise BenchError(f"{model}: its preset {preset} declares no tune.grid; a baseline is tuned on the data "
                             "it is compared on (add a grid of the values to choose from)")
        return [], {"grid": {}, "why": NO_GRID[model]}
    per_split = model in CLOSED_FORM_MODELS
    tune_seed = seed if per_split else first_seed
    overrides = select + data_for_seed(tune_seed) + list(plan.train_overrides)
    name = f"{label}-{model}-split{tune_seed}"
    rec = tune_run(plan.out_dir, name, preset, overrides, timeout_s=8 * 3600, invocation=plan.invocation,
                   reuse=plan.reuse)
    return rec["chosen_overrides"], {"grid": rec["grid"], "chosen": rec["chosen"], "tuned_on_seed": tune_seed,
                                     "per_split": per_split, "best_val": rec["best_val"],
                                     "points": len(rec["points"]), "command": rec["command"]}


def short_key(key: str) -> str:
    """``model.rp3.alpha`` -> ``rp3.alpha``; ``train.l2`` stays."""
    return key.split(".", 1)[1] if key.startswith("model.") else key


def chosen_text(tuning_per_seed: list[dict[str, Any]]) -> str:
    """The chosen values over the seeds, e.g. ``ease_lambda 30/30/100/30/30, ease_dropout 0``."""
    first = tuning_per_seed[0] if tuning_per_seed else {}
    if not first.get("grid"):
        return first.get("why", "–")
    parts = []
    for key in first["grid"]:
        values = [str(t["chosen"][key]) for t in tuning_per_seed]
        parts.append(f"{short_key(key)} {values[0] if len(set(values)) == 1 else '/'.join(values)}")
    return ", ".join(parts)


def grid_text(tuning: dict[str, Any]) -> str:
    """``ease_lambda ∈ {3, 10, …}, ease_dropout ∈ {0, 0.1}; per split`` for a row's note."""
    if not tuning.get("grid"):
        return tuning.get("why", "")
    grid = ", ".join(f"{short_key(k)} ∈ {{{', '.join(str(v) for v in vs)}}}" for k, vs in tuning["grid"].items())
    where = "on each split's validation" if tuning.get("per_split") else \
        f"on split seed {tuning.get('tuned_on_seed')}'s validation, then fixed"
    return f"{grid} ({where})"
