"""``graphrec-dist tune``: choose a model's settings on the validation split of the data it runs on.

Every combination of the grid (the preset's ``tune.grid`` and any ``--grid`` entries, which replace
the preset's entry of the same key) is trained on the same data and scored by validation NDCG@10;
the best wins (the first in grid order on a tie). Test is never computed for a grid point; with
``--final`` the chosen settings are trained once more and tested, once.

Closed-form models (EASE, rp3beta, ...) are fitted in this process and not saved, their shared
pieces (the Gram matrix, each lambda's solution) computed once for all points
(:mod:`graphrec_dist.models.fit_cache`); gradient-trained models run each point as an ordinary run
in ``OUT/points/NN`` (resumable). ``OUT/tune.json`` holds the grid, every point's validation
figures and the choice; it is rewritten after each point, and a rerun into the same folder (the
same config and overrides, the grid perhaps grown) skips the points it holds.

Usage: ``graphrec-dist tune CONFIG [key=value ...] [--grid key=v1,v2,...]... [--out DIR] [--final]``
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

from graphrec_dist.config import Config, load_config, parse_args, parse_grid
from graphrec_dist.distributed import DistContext
from graphrec_dist.errors import ConfigError
from graphrec_dist.evaluate import evaluate_model
from graphrec_dist.io_utils import write_json_atomic
from graphrec_dist.logging_utils import get_logger, setup_logging
from graphrec_dist.models import CLOSED_FORM_MODELS
from graphrec_dist.models.fit_cache import fit_cache
from graphrec_dist.run_dir import new_model
from graphrec_dist.train import load_data, run_training, threads
from graphrec_dist.trainer import metric_key

log = get_logger("tune")
RESULT = "tune.json"


def override(key: str, value: Any) -> str:
    """``key=value`` with the value spelled so that the config reader parses it back to itself."""
    return f"{key}={json.dumps(value)}"


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def choose(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The point with the highest ``val`` (the first of equals)."""
    return max(points, key=lambda p: p["val"])  # max keeps the first of equal keys


def point_config(config: str | None, overrides: list[str], values: dict[str, Any], out_dir: Path,
                 final: bool = False) -> Config:
    """The config of one grid point (``final``: the chosen point's tested run)."""
    extra = [override(k, v) for k, v in values.items()]
    where = [f"run.out_dir={out_dir}", "run.progress=false"] + ([] if final else ["eval.test=false"])
    return load_config(config, list(overrides) + extra + where)


class PointRunner:
    """Scores grid points on validation; closed forms reuse one loaded bundle per data config."""

    def __init__(self, ctx: DistContext):
        self.ctx = ctx
        self.bundles: dict[str, Any] = {}

    def __call__(self, cfg: Config) -> dict[str, Any]:
        start = time.perf_counter()
        if cfg.model.name in CLOSED_FORM_MODELS:
            key = json.dumps(cfg.to_dict()["data"], sort_keys=True)
            if key not in self.bundles:
                self.bundles = {key: load_data(cfg, self.ctx)}  # one dataset held at a time
            bundle = self.bundles[key]
            with threads(cfg):
                model = new_model(cfg, bundle, self.ctx.device)
                model.fit(bundle, self.ctx)
                val, epoch = evaluate_model(model, bundle, "val", cfg.eval, self.ctx), 0
        else:
            result = run_training(cfg, self.ctx)
            val, epoch = result.best_val or {}, result.best_epoch
        return {"val": val.get(metric_key(cfg)), "val_metrics": val, "best_epoch": epoch,
                "seconds": round(time.perf_counter() - start, 2)}


def run_tune(config: str | None, overrides: list[str], extra_grid: list[str], out: Path,
             final: bool = False, ctx: Optional[DistContext] = None) -> dict[str, Any]:
    """Train every grid point, choose on validation, write and return ``OUT/tune.json``'s content."""
    ctx = ctx or DistContext()
    base = load_config(config, overrides)
    grid = {**parse_grid(base.tune.grid), **parse_grid(extra_grid)}
    if not grid:
        raise ConfigError(f"nothing to tune: {config or 'the config'} declares no tune.grid and no --grid was given")
    points = grid_points(grid)
    # Every point's config is checked before the first one trains: a bad value exits 2 at once.
    configs = [point_config(config, overrides, p, out / "points" / f"{i:02d}") for i, p in enumerate(points)]
    metric = metric_key(base)
    record: dict[str, Any] = {"config": config, "overrides": list(overrides), "model": base.model.name,
                              "grid": grid, "metric": f"val_{metric}", "points": []}
    done = _earlier_points(out / RESULT, record)
    runner = PointRunner(ctx)
    with fit_cache():
        for i, (values, cfg) in enumerate(zip(points, configs)):
            row = done.get(json.dumps(values, sort_keys=True)) or {"values": values, **runner(cfg)}
            record["points"].append(row)
            log.info("point %d/%d %s: val %s=%s", i + 1, len(points), _shown(values), metric,
                     "–" if row["val"] is None else f"{row['val']:.4f}")
            write_json_atomic(out / RESULT, record)
    scored = [p for p in record["points"] if p["val"] is not None]
    if not scored:
        raise ConfigError(f"no grid point produced a validation {metric} (is the validation split empty?)")
    best = choose(scored)
    record["chosen"] = best["values"]
    record["chosen_overrides"] = [override(k, v) for k, v in best["values"].items()]
    record["best_val"] = best["val"]
    if final:
        result = run_training(point_config(config, overrides, best["values"], out / "final", final=True), ctx)
        record["final"] = {"run_dir": str(out / "final"), "test": result.test_metrics}
    write_json_atomic(out / RESULT, record)
    return record


def _earlier_points(path: Path, record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The points a previous ``tune`` into the same folder finished from the same config and
    overrides (a point's values say the rest, so a grid that grew keeps the points it had)."""
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    if any(old.get(k) != record[k] for k in ("config", "overrides")):
        return {}
    return {json.dumps(p["values"], sort_keys=True): p for p in old.get("points", [])}


def _shown(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())


def report(record: dict[str, Any]) -> str:
    """The points as a table, the chosen one marked, and how to train it."""
    keys = list(record["grid"])
    lines = [f"{record['model']}: {len(record['points'])} grid points, chosen on {record['metric']}",
             "  ".join(keys + [record["metric"], "seconds"])]
    for p in record["points"]:
        mark = "  <- chosen" if p["values"] == record["chosen"] else ""
        val = "–" if p["val"] is None else f"{p['val']:.4f}"
        lines.append("  ".join([str(p["values"][k]) for k in keys] + [val, str(p["seconds"])]) + mark)
    if "final" in record:
        test = record["final"]["test"]
        shown = "  ".join(f"{k}={v:.4f}" for k, v in test.items() if "@" in k or k == "mrr")
        lines.append(f"final run {record['final']['run_dir']}: test {shown}")
    else:
        args = [record["config"] or "", *record["overrides"], *record["chosen_overrides"]]
        lines.append("train the chosen settings: graphrec-dist train " + " ".join(a for a in args if a))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphrec-dist tune", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="YAML preset, e.g. configs/baselines/ease.yaml")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides (the data to tune on, ...)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="values to try for one option; repeat for several (replaces the preset's entry)")
    parser.add_argument("--out", default=None, help="folder of the points and tune.json (default: run.out_dir-tune)")
    parser.add_argument("--final", action="store_true", help="train the chosen settings once more and test them")
    return parser


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """``graphrec-dist tune``; returns tune.json's content."""
    args = parse_args(build_parser(), argv)
    cfg = load_config(args.config, args.overrides)
    setup_logging(0, cfg.run.log_level)
    out = Path(args.out) if args.out else Path(f"{cfg.run.out_dir}-tune")
    record = run_tune(args.config, list(args.overrides), list(args.grid), out, final=args.final)
    print(report(record))
    print(f"written: {out / RESULT}")
    sys.stdout.flush()
    return record


if __name__ == "__main__":
    from graphrec_dist.cli import run_command

    sys.exit(run_command("tune", sys.argv[1:]))
