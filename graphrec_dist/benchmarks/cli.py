"""``graphrec-dist bench``: run the benchmark sections, write one JSON per section, then the
report (PNG plots + docs/RESULTS.md) from whatever JSON the output folder holds.

    graphrec-dist bench                      # reduced sizes (make bench), ~50 min on 2 cores (BENCHMARKS.md)
    graphrec-dist bench --full               # the issue's sizes (hours)
    graphrec-dist bench --sections sampling,evaluation
    graphrec-dist bench --report-only        # redraw docs/RESULTS.md from bench_out/*.json
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphrec_dist.benchmarks.common import BenchError, section_payload, write_section
from graphrec_dist.benchmarks.plan import QUALITY_MODELS, BenchPlan, full_plan, reduced_plan
from graphrec_dist.benchmarks.quality import MAIN_PRESET
from graphrec_dist.benchmarks.report import generate
from graphrec_dist.config import parse_args, parse_override
from graphrec_dist.errors import UserError
from graphrec_dist.logging_utils import get_logger, setup_logging

# Run order matters only for sharing: quality trains the graphsage run that training and
# evaluation reuse; memory's Goodbooks-scale point is reused by the sweep's 100% point.
SECTIONS: dict[str, str] = {
    "quality": "graphrec_dist.benchmarks.quality:run_section",
    "realdata": "graphrec_dist.benchmarks.realdata:run_section",
    "realbooks": "graphrec_dist.benchmarks.realdata:run_books_section",
    "inductive": "graphrec_dist.benchmarks.inductive:run_section",
    "sampled_speed": "graphrec_dist.benchmarks.sampled_speed:run_section",
    "serving": "graphrec_dist.benchmarks.serving:run_section",
    "training": "graphrec_dist.benchmarks.training:run_section",
    "evaluation": "graphrec_dist.benchmarks.evaluation:run_section",
    "sampling": "graphrec_dist.benchmarks.sampling:run_section",
    "scaling": "graphrec_dist.benchmarks.scaling:run_section",
    "sharding": "graphrec_dist.benchmarks.sharding:run_section",
    "memory": "graphrec_dist.benchmarks.memory:run_memory",
    "sweep": "graphrec_dist.benchmarks.memory:run_sweep",
}

log = get_logger("bench")
DEFAULT_OUT = "bench_out"  # --out's default; a recorded command names --out only when it differs


@dataclass
class BenchResult:
    """What a bench invocation did: section JSON paths, failures, the report path."""

    written: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    report: Path | None = None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="graphrec-dist bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="the issue's full sizes (hours on 2 cores)")
    p.add_argument("--sections", default="all", help=f"comma-separated subset of: {', '.join(SECTIONS)} (default all)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"folder for JSON, runs, data and logs (default {DEFAULT_OUT})")
    p.add_argument("--docs", default="docs", help="where RESULTS.md and img/ go (default docs)")
    p.add_argument("--repeats", type=int, default=None, help="repeats per timed figure (medians are reported)")
    p.add_argument("--reuse", action="store_true", help="reuse datasets and training runs of an earlier invocation")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override appended to every training run (repeatable), e.g. train.num_workers=1; "
                        "a bare section.key=value anywhere on the line does the same")
    p.add_argument("--quality-epochs", default=None, metavar="N|preset",
                   help="epochs of every trained model in the quality table: a number, or 'preset' for each "
                        "preset's own epochs and validation schedule (default: 5 reduced, preset with --full)")
    p.add_argument("--models", default=None, metavar="M1,M2",
                   help="quality, realdata and realbooks sections: train only these models and keep the other "
                        "models' rows from the section's earlier JSON in --out, when that was measured on the "
                        f"same data (for one changed preset); any of {', '.join(QUALITY_MODELS)}; inductive "
                        "section: only these of its models (content_knn too), nothing carried over")
    p.add_argument("--seeds", default=None, metavar="S1,S2",
                   help="realdata, realbooks and inductive sections: the split seeds (default 0-4 for the "
                        "real-data tables; inductive 0,1, or 0-4 with --full)")
    p.add_argument("--ablation", action="store_true",
                   help="quality section: also train graphsage without each side relation")
    p.add_argument("--jobs", type=int, default=None,
                   help="quality, realdata and realbooks sections: training runs at once, one process each "
                        "(default 1; 2 with --full)")
    p.add_argument("--real-data", default=None, metavar="DIR",
                   help="realdata section: the folder of real interaction files (default "
                        "../shared/data/movielens-100k)")
    p.add_argument("--real-spec", default=None, metavar="YAML",
                   help="realdata section: the CSV spec of --real-data (default configs/data/movielens-100k.yaml)")
    p.add_argument("--real-books", default=None, metavar="DIR",
                   help="realbooks section: the folder of real Goodbooks files (default ../shared/data/goodbooks-10k; "
                        "its spec is configs/data/goodbooks-ratings.yaml)")
    p.add_argument("--report-only", action="store_true", help="only regenerate the report from existing JSON")
    p.add_argument("--no-report", action="store_true", help="write JSON only")
    return p


# Sections that "all" runs only with --full: realbooks trains graphsage for ~40 minutes a run on
# 2 cores (5 seeds x 2 variants: hours), more than the reduced suite's whole budget.
FULL_ONLY = ("realbooks",)
INDUCTIVE_ONLY = ("content_knn",)  # models of the inductive section that the quality tables do not train


def parse_sections(text: str, full: bool = True) -> list[str]:
    if text == "all":
        return [s for s in SECTIONS if full or s not in FULL_ONLY]
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise UserError(f"--sections: unknown section(s) {', '.join(unknown) or '(none given)'}; "
                        f"expected a comma-separated subset of {', '.join(SECTIONS)}")
    return [n for n in SECTIONS if n in names]  # always the canonical order


def make_plan(args: argparse.Namespace) -> BenchPlan:
    out = Path(args.out)
    plan = full_plan(out) if args.full else reduced_plan(out)
    if args.repeats is not None:
        if args.repeats < 1:
            raise UserError("--repeats: expected a positive integer")
        plan.repeats = args.repeats
    plan.reuse = args.reuse
    if args.quality_epochs == "preset":
        plan.quality_overrides = []
    elif args.quality_epochs is not None:
        if not args.quality_epochs.isdigit() or int(args.quality_epochs) < 1:
            raise UserError(f"--quality-epochs: expected a positive integer or 'preset', got {args.quality_epochs!r}")
        plan.quality_overrides = [f"train.epochs={args.quality_epochs}", "eval.every=1"]
    plan.ablation = plan.ablation or args.ablation
    if args.models is not None:
        names = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in names if m not in QUALITY_MODELS + INDUCTIVE_ONLY]
        if unknown or not names:
            raise UserError(f"--models: unknown model(s) {', '.join(unknown) or '(none given)'}; expected a "
                            f"comma-separated subset of {', '.join(QUALITY_MODELS + INDUCTIVE_ONLY)}")
        plan.quality_models = [m for m in QUALITY_MODELS if m in names]
        plan.inductive_models = [m for m in QUALITY_MODELS + INDUCTIVE_ONLY if m in names]
        plan.carry_over = True
    if args.seeds is not None:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            seeds = []
        if not seeds or any(s < 0 for s in seeds):
            raise UserError(f"--seeds: expected comma-separated split seeds (integers >= 0), got {args.seeds!r}")
        plan.real_seeds, plan.inductive_seeds = seeds, seeds
    if args.jobs is not None:
        if args.jobs < 1:
            raise UserError("--jobs: expected a positive integer")
        plan.quality_jobs = args.jobs
    if args.real_data is not None:
        plan.real_data_dir = args.real_data
    if args.real_spec is not None:
        plan.real_spec = args.real_spec
    if args.real_books is not None:
        plan.real_books_dir = args.real_books
    for item in args.overrides:
        parse_override(item)  # a malformed override is the user's to fix, before hours of work
    plan.train_overrides = list(args.overrides)
    plan.invocation = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    return plan


def run_section(name: str, plan: BenchPlan, command: str) -> Path:
    """Run one section and write its JSON; returns the JSON path."""
    module_name, func_name = SECTIONS[name].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    t0 = time.perf_counter()
    results: dict[str, Any] = func(plan)
    results["section_wall_s"] = round(time.perf_counter() - t0, 1)
    results["plan"] = plan.as_dict()
    return write_section(plan.out_dir, section_payload(name, plan.mode, command, results))


def main(argv: list[str] | None = None) -> BenchResult:
    args = parse_args(build_parser(), argv)
    setup_logging(0, "INFO")
    plan = make_plan(args)
    sections = [] if args.report_only else parse_sections(args.sections, args.full)
    if sections and not Path(MAIN_PRESET).is_file():
        raise UserError(f"{MAIN_PRESET} not found: run graphrec-dist bench from the repository root "
                        "(the sections train with its config presets)")
    command = "graphrec-dist bench" + (" --full" if args.full else "")
    if args.sections != "all":
        command += f" --sections {','.join(sections)}"
    command += "".join(f" --set {o}" for o in args.overrides)
    if args.quality_epochs is not None:
        command += f" --quality-epochs {args.quality_epochs}"
    if args.models is not None:
        command += f" --models {','.join(m for m in QUALITY_MODELS + INDUCTIVE_ONLY if m in args.models.split(','))}"
    if args.seeds is not None:
        command += f" --seeds {args.seeds}"
    if args.out != DEFAULT_OUT:  # carried rows and reused runs are found under --out
        command += f" --out {args.out}"
    if args.ablation:
        command += " --ablation"
    if args.real_data is not None:
        command += f" --real-data {args.real_data}"
    if args.real_spec is not None:
        command += f" --real-spec {args.real_spec}"
    if args.real_books is not None:
        command += f" --real-books {args.real_books}"
    result = BenchResult()
    for name in sections:
        log.info("bench section %s (%s)", name, plan.mode)
        t0 = time.perf_counter()
        try:
            result.written[name] = run_section(name, plan, command)
        except Exception as exc:  # one broken section must not cost the others their figures
            result.failed[name] = f"{type(exc).__name__}: {exc}"
            log.error("section %s failed: %s", name, exc, exc_info=not isinstance(exc, UserError))
            continue
        log.info("section %s done in %.0f s -> %s", name, time.perf_counter() - t0, result.written[name])
    if not args.no_report:
        result.report = generate(plan.out_dir, Path(args.docs))
        log.info("report written: %s", result.report)
    if result.failed:
        raise BenchError("sections failed (their JSON was not written; logs under "
                         f"{plan.out_dir / 'logs'}): " + "; ".join(f"{k}: {v}" for k, v in result.failed.items()))
    return result
