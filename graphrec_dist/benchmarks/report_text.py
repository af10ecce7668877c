"""The Markdown parts of docs/RESULTS.md, one function per section (numbers from JSON only)."""
from __future__ import annotations

from typing import Any

from graphrec_dist.benchmarks.common import GOODBOOKS_USERS
from graphrec_dist.benchmarks.sharding import table as sharding_table

Section = dict[str, Any] | None
QUALITY_COLUMNS = ("hit@10", "hit@20", "hit@50", "ndcg@10", "ndcg@20", "ndcg@50")


def fmt(x: Any, nd: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{nd}f}"
    return str(x)


def hours(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:,.0f} s ({seconds / 3600:.1f} h)" if seconds >= 3600 else f"{seconds:,.0f} s"


def reproduce(payload: dict[str, Any], name: str) -> str:
    """The command that made this section's JSON, narrowed to the section."""
    command = payload.get("command") or ("graphrec-dist bench" + (" --full" if payload.get("mode") == "full" else ""))
    return f"`{command}`" if "--sections" in command else f"`{command} --sections {name}`"


def scale_of(users: int | None) -> str:
    if not users:
        return "–"
    return f"{users:,} users ({100.0 * users / GOODBOOKS_USERS:.0f}% of Goodbooks)"


def not_run(title: str, name: str) -> str:
    return (f"## {title}\n\nNot run into this bench folder, and no JSON of it kept in docs/bench "
            f"(run `graphrec-dist bench --sections {name}`).")


def machine_table(present: dict[str, dict[str, Any]]) -> str:
    if not present:
        return "## Machine\n\nNo section has been run yet."
    m = next(iter(present.values()))["machine"]
    rows = [("CPU", m.get("cpu_model")), ("cores (usable / logical)", f"{m.get('usable_cores')} / "
                                                  f"{m.get('logical_cores')}"),
            ("RAM", f"{m.get('ram_gb')} GB"), ("torch threads", m.get("torch_threads")),
            ("GPU", m.get("gpus") if m.get("cuda") else "none"), ("python", m.get("python")),
            ("torch", m.get("torch")), ("torch_geometric", m.get("torch_geometric")),
            ("sampling backends", ", ".join(f"{k} {v}" if v else f"{k}: not installed"
                                            for k, v in (m.get("sampling_backends") or {}).items())),
            ("platform", m.get("platform"))]
    lines = ["## Machine", "", "| | |", "|---|---|"] + [f"| {k} | {fmt(v)} |" for k, v in rows]
    lines.append("")
    lines.append("Shared machine: the 1-minute load average when each section finished is in the table below; "
                 "figures taken under load are slower than the machine can do.")
    return "\n".join(lines)


def _section_scale(name: str, res: dict[str, Any]) -> str:
    plan = res.get("plan", {})
    if name == "quality":
        return scale_of(res.get("num_users"))
    if name in ("realdata", "realbooks"):
        return f"{res.get('data_dir')}, {len(res.get('seeds', []))} split seeds"
    if name == "sampled_speed":
        return scale_of(res.get("num_users"))
    if name == "serving":
        return scale_of(res.get("users"))
    if name == "inductive":
        names = [d.get("name") for d in res.get("datasets", {}).values() if d.get("name")]
        return f"{'; '.join(names)}; {len(res.get('seeds', []))} split seeds"
    if name == "training":
        return f"profile {scale_of(plan.get('profile_users'))}; race {scale_of(plan.get('compare_users'))}"
    if name == "evaluation":
        return (f"evaluator vs bare: {scale_of(plan.get('eval_users'))}; "
                f"inference: {scale_of(plan.get('quality_users'))}")
    if name == "sampling":
        return scale_of(res.get("num_users"))
    if name in ("scaling", "memory"):
        return scale_of(res.get("users"))
    if name == "sweep":
        return ", ".join(f"{p['percent']:g}%" for p in res.get("points", []))
    return "–"


def scale_table(sections: dict[str, Section]) -> str:
    lines = ["## What was run, at which scale", "",
             "| section | mode | scale | commit | finished (UTC) | load avg | section time | reproduce |",
             "|---|---|---|---|---|---|---|---|"]
    for name, payload in sections.items():
        if not payload:
            lines.append(f"| {name} | not run | – | – | – | – | – | `graphrec-dist bench --sections {name}` |")
            continue
        res = payload["results"]
        lines.append(f"| {name} | {payload['mode']} | {_section_scale(name, res)} | "
                     f"{payload['machine'].get('git_commit')} "
                     f"| {payload['finished_at']} | {fmt(payload['machine'].get('load_avg_1m'), 2)} "
                     f"| {_section_time(res)} | {reproduce(payload, name)} |")
    return "\n".join(lines)


def _section_time(res: dict[str, Any]) -> str:
    """The section's wall time; with training runs reused from an earlier invocation (--reuse),
    also what those runs took when they were made."""
    text = f"{fmt(res.get('section_wall_s'), 0)} s"
    runs = list(res.get("models", {}).values()) + list(res.get("ablation", {}).get("results", {}).values())
    reused = [r for r in runs if r.get("reused")]
    if reused:
        text += (f" ({len(reused)} runs reused from an earlier invocation, which took "
                 f"{fmt(sum(r.get('wall_s') or 0.0 for r in reused), 0)} s)")
    return text


def eval_ratio(res: dict[str, Any] | None) -> tuple[Any, Any, Any]:
    """(evaluator seconds, bare matmul+top-k seconds, ratio) from bench_evaluation's dict."""
    v = (res or {}).get("versus_bare") or {}
    return v.get("evaluator_s"), v.get("bare_topk_s"), v.get("ratio")


def phases_per_step(prof: dict[str, Any]) -> dict[str, float]:
    """Seconds per step of sampling / forward / backward / optimizer from profile_steps' totals."""
    steps = prof.get("steps") or 1
    return {phase: float(prof[f"{phase}_s"]) / steps for phase in ("sampling", "forward", "backward", "optimizer")
            if prof.get(f"{phase}_s") is not None}


def headline(sections: dict[str, Section]) -> str:
    res = {k: (v or {}).get("results") for k, v in sections.items()}
    lines = ["## Headline figures", ""]
    q = res.get("quality")
    if q and q.get("ranking"):
        rank = q["ranking"]
        pos = rank.index("graphsage") + 1 if "graphsage" in rank else None
        lines.append(f"- Quality: best test NDCG@10 is **{rank[0]}** "
                     f"({fmt(q['models'][rank[0]]['test'].get('ndcg@10'))}); graphsage ranks "
                     f"{pos if pos else 'n/a'} of {len(rank)}.")
    t = res.get("training")
    if t:
        r = t["compare"]["race"]
        ratio = r.get("time_ratio_reference_over_trainer")
        lines.append(f"- Time to validation NDCG@10 ≥ {fmt(r['target_val_ndcg@10'])}: reference loop / trainer = "
                     f"{fmt(ratio, 2)}× (trainer {fmt((r.get('trainer') or {}).get('train_s'), 1)} s, reference "
                     f"{fmt((r.get('reference') or {}).get('train_s'), 1)} s; best within budget: trainer "
                     f"{fmt(r['best_trainer'])}, reference {fmt(r['best_reference'])}).")
        sps = t["profile"].get("seed_edges_per_s")
        lines.append(f"- Training throughput (graphsage, {fmt(t['profile'].get('users'))} users): {fmt(sps, 0)} seed "
                     f"edges/s, "
                     f"{hours(t['profile'].get('est_epoch_s'))} per epoch.")
    ev, bare, ratio = eval_ratio(res.get("evaluation"))
    if ratio is not None:
        lines.append(f"- Full-ranking evaluator / bare chunked matmul + top-k: **{fmt(ratio, 2)}×** (target ≤ 1.5×; "
                     f"{fmt(ev, 2)} s vs {fmt(bare, 2)} s).")
    s = res.get("sampling")
    if s:
        rows = [r for r in s["rows"] if r.get("seed_edges_per_s")]
        if rows:
            best = max(rows, key=lambda r: r["seed_edges_per_s"])
            base = next((r for r in rows if r["num_workers"] == 0 and r["backend"] == best["backend"]), None)
            gain = best["seed_edges_per_s"] / base["seed_edges_per_s"] if base else None
            lines.append(f"- Sampling: {fmt(best['seed_edges_per_s'], 0)} seed edges/s ({best['backend']}, "
                         f"num_workers={best['num_workers']}; {fmt(gain, 2)}× num_workers=0).")
    sc = res.get("scaling")
    if sc and len(sc["rows"]) > 1:
        lines.append(f"- DDP 2 vs 1 gloo processes on CPU: {fmt(sc['rows'][1].get('speedup'), 2)}× throughput.")
    m = res.get("memory")
    if m:
        lines.append(f"- Peak RSS at {fmt(m['users'])} users: data build "
                     f"{fmt(m['data_build']['peak_rss_mb'] / 1024, 2)} GiB, "
                     f"training {fmt(m['training']['peak_rss_mb'] / 1024, 2)} GiB (target < 6 GB: "
                     f"{'met' if m.get('training_under_target') else 'NOT met'}), evaluation "
                     f"{fmt(m['evaluation']['peak_rss_mb'] / 1024, 2)} GiB.")
    if len(lines) == 2:
        lines.append("No section has been run yet.")
    return "\n".join(lines)


def img(rel: dict[str, str], key: str, alt: str, payload: dict[str, Any], name: str) -> list[str]:
    """Markdown lines of chart ``key`` with its caption and reproduce line (none without the chart)."""
    if key not in rel:
        return []
    return ["", f"![{alt}]({rel[key]})", "", f"*Figure: {alt}. Reproduce: {reproduce(payload, name)}.*"]


def training_part(payload: Section, rel: dict[str, str]) -> str:
    if not payload:
        return not_run("Training speed", "training")
    res = payload["results"]
    prof, comp = res["profile"], res["compare"]
    phases = phases_per_step(prof)
    lines = ["## Training speed", ""]
    if prof.get("error"):
        lines += [f"The per-phase profile failed: {prof['error']}", ""]
    else:
        lines += [f"graphsage on Graph3, {fmt(prof.get('users'))} users, {fmt(prof.get('steps'))} profiled "
                  f"steps (`{prof.get('command')}`): **{fmt(prof.get('seed_edges_per_s'), 0)} seed edges/s**; "
                  f"an epoch over all {fmt(prof.get('train_edges'))} training edges "
                  f"({fmt(prof.get('steps_per_epoch'))} steps "
                  f"of {fmt(prof.get('batch_size'))}) would take {hours(prof.get('est_epoch_s'))}.", ""]
    if phases:
        total = sum(phases.values())
        lines += ["| phase | ms per step | share |", "|---|---|---|"]
        lines += [f"| {k} | {v * 1000:.1f} | {100 * v / total:.0f}% |" for k, v in phases.items()]
    lines += img(rel, "phases", "seconds per graphsage training step by phase", payload, "training")
    ref, race = comp["reference"], comp["race"]
    lines += ["", f"### Trainer vs the reference notebook loop ({fmt(comp['users'])} users, same data, same "
              "evaluator)", "",
              f"Reference loop: {fmt(ref['steps'])} steps ({fmt(ref['steps_per_epoch'])} per epoch) in "
              f"{fmt(ref['train_s'], 1)} s, {fmt(ref.get('seed_users_per_s'), 0)} seed users/s; "
              f"{fmt(100 * ref['fallback_share_pos'], 1)}% of positives and {fmt(100 * ref['fallback_share_neg'], 1)}% "
              "of negatives fell outside the sampled subgraph and were scored with raw embeddings."
              + (" At this size one reference batch holds every user (one step an epoch), so each reference step is a "
                 "full-graph step over the small user–book graph; at Goodbooks scale it is 27 steps an epoch, and the "
                 "`--full` race (53,424 users) is the one that decides." if ref["steps_per_epoch"] == 1 else ""), "",
              "| loop | reaches target at (training s) | at step | best val NDCG@10 in budget |", "|---|---|---|---|",
              f"| trainer (graphsage, Graph3) | {fmt((race.get('trainer') or {}).get('train_s'), 1)} | "
              f"{fmt((race.get('trainer') or {}).get('step'))} | {fmt(race['best_trainer'])} |",
              f"| reference notebook loop | {fmt((race.get('reference') or {}).get('train_s'), 1)} | "
              f"{fmt((race.get('reference') or {}).get('step'))} | {fmt(race['best_reference'])} |", "",
              f"Target: validation NDCG@10 ≥ {fmt(race['target_val_ndcg@10'])} (90% of the lower of the two bests). "
              f"The reference loop's training time was capped at {fmt(comp.get('budget_s'), 0)} s (the trainer's own "
              "training time, or the plan's cap if lower). "
              f"Trainer run: `{comp['trainer']['command']}`."]
    lines += img(rel, "race", "validation NDCG@10 against training time", payload, "training")
    return "\n".join(lines)


def evaluation_part(payload: Section, memory: Section, rel: dict[str, str]) -> str:
    if not payload:
        return not_run("Evaluation speed", "evaluation")
    res = payload["results"]
    ev, bare, ratio = eval_ratio(res)
    args = res["versus_bare"].get("args", {})
    inf = res["graphsage_inference"]
    lines = ["## Evaluation speed", "",
             f"Full ranking of {fmt(args.get('num_users'))} users × {fmt(args.get('num_books'))} books (dim "
             f"{args.get('dim')}, random embeddings): evaluator {fmt(ev, 3)} s vs bare chunked matmul + top-k "
             f"{fmt(bare, 3)} s → **{fmt(ratio, 2)}×** (target ≤ {res['versus_bare'].get('target_ratio')}×). "
             f"Reproduce: {reproduce(payload, 'evaluation')}.", "",
             f"Trained graphsage ({fmt(inf.get('num_users'))} users, {fmt(inf.get('num_books'))} books): embedding "
             f"inference for every node {fmt(inf.get('inference_s'), 3)} s, full ranking of the test split "
             f"{fmt(inf.get('ranking_s'), 3)} s."]
    if memory:
        m = memory["results"]
        lines.append(f"At {fmt(m['users'])} users: inference {fmt(m['evaluation']['inference_s'], 2)} s, ranking "
                     f"{fmt(m['evaluation']['ranking_s'], 2)} s (memory section).")
    lines += img(rel, "evaluation", "evaluator vs bare chunked matmul + top-k", payload, "evaluation")
    return "\n".join(lines)


def sampling_part(payload: Section, rel: dict[str, str]) -> str:
    if not payload:
        return not_run("Sampling throughput", "sampling")
    res = payload["results"]
    timed = next((r.get("batches") for r in res["rows"] if r.get("installed")), None)
    lines = ["## Sampling throughput", "",
             f"Triplet LinkNeighborLoader on Graph3 ({fmt(res['num_users'])} users, {fmt(res['train_edges'])} training "
             f"edges), batch {res['batch_size']} seed edges, fanout {res['num_neighbors']}, {res['neg_per_pos']} "
             f"negative{'s' if res['neg_per_pos'] != 1 else ''} per positive; median of {res['repeats']} repeats of "
             f"{fmt(timed)} batches "
             "after the first.", "",
             "| backend | num_workers | seed edges/s | s per batch | startup s |", "|---|---|---|---|---|"]
    for r in res["rows"]:
        if not r.get("installed"):
            lines.append(f"| {r['backend']} | – | not installed | – | – |")
        else:
            lines.append(f"| {r['backend']} {r['version']} | {r['num_workers']} | {fmt(r['seed_edges_per_s'], 0)} "
                         f"| {fmt(r['seconds_per_batch'])} | {fmt(r['startup_s'], 2)} |")
    lines += img(rel, "sampling", "sampling throughput per backend and num_workers", payload, "sampling")
    return "\n".join(lines)


def sharding_part(payload: Section) -> str:
    """Replicated vs user-sharded training (:mod:`graphrec_dist.benchmarks.sharding`)."""
    if not payload:
        return not_run("User-sharded training", "sharding")
    res = payload["results"]
    build = res["build"]
    return "\n".join([
        "## User-sharded training (`dist.sharding=users`, gloo, CPU)", "",
        f"{scale_of(res['users'])}, {res['preset']}'s model and train sections, {res['steps']} steps then "
        f"validation and test; peak RSS of the largest process (the busiest rank). The data build and its "
        f"{build['partitions']} user partitions first, {_build_figures(build)}. "
        f"Command: `{payload.get('command') or 'graphrec-dist bench --sections sharding'}`"
        " (what it measures and the refit memory model: [SCALING.md](SCALING.md#user-sharded-training-measured)).", "",
        sharding_table(res["rows"])])


def _build_figures(build: dict) -> str:
    text = f"streamed: peak {fmt(build['peak_rss_gib'], 2)} GiB, {fmt(build['wall_s'], 0)} s"
    if "in_memory" in build:  # sections run before the streamed build have its figures only
        old = build["in_memory"]
        text += (f"; in memory (the whole bundle, then the partitions cut from it): peak "
                 f"{fmt(old['peak_rss_gib'], 2)} GiB, {fmt(old['wall_s'], 0)} s; streamed peak "
                 f"{fmt(build['peak_vs_in_memory'], 2)}× in memory")
    return text


def scaling_part(payload: Section, rel: dict[str, str]) -> str:
    if not payload:
        return not_run("Scaling", "scaling")
    res = payload["results"]
    lines = ["## Scaling (DDP, gloo, CPU)", "",
             f"graphsage, {scale_of(res['users'])}: the second of two epochs of {fmt(res['steps'])} global batches "
             f"each. "
             "Command: `torchrun --nproc_per_node=N -m graphrec_dist.train configs/demo.yaml "
             + " ".join(res.get("overrides", [])) + "`.", "",
             "| processes | global seed edges/s | speedup | peak RSS (MiB, largest process) |", "|---|---|---|---|"]
    lines += [f"| {r['processes']} | {fmt(r['seed_edges_per_s'], 0)} | {fmt(r.get('speedup'), 2)} | "
              f"{fmt(r['peak_rss_mb'], 0)} |"
              for r in res["rows"]]
    threads = [str(r.get("threads_per_process", "?")) for r in res["rows"]]
    lines += ["", f"Intra-op threads per process: {' / '.join(threads)} (1 vs 2 processes; from the preset's "
              "`train.num_threads`). With one thread each, 2 processes use both cores where 1 process uses one: the "
              "CPU "
              "stand-in for 1 vs 2 devices, on a machine whose 2 cores are shared with other work. Expected N-GPU "
              "scaling and its limits: see [BENCHMARKS.md](BENCHMARKS.md#scaling-to-n-gpus)."]
    lines += img(rel, "scaling", "global throughput with 1 and 2 processes", payload, "scaling")
    return "\n".join(lines)


def memory_part(payload: Section) -> str:
    if not payload:
        return not_run("Memory", "memory")
    m = payload["results"]
    lines = [f"## Memory at {scale_of(m['users'])}", "",
             f"Data build: `{m['data_build'].get('command', 'bench_build')}` (generate, build and load, each in its "
             "own process; the largest of the three). Training: `profile_steps` in its own process. Evaluation: "
             "load the bundle, build graphsage, layer-wise inference for every node and full ranking of the test "
             "split, in its own process (a fresh model: the cost does not depend on the weights).", "",
             "| stage | peak RSS (GiB) | seconds |", "|---|---|---|",
             f"| data build (generate + Graph3) | {m['data_build']['peak_rss_mb'] / 1024:.2f} | "
             f"{fmt(m['data_build']['synth_s'] + m['data_build']['build_s'], 1)} |",
             f"| training ({m['training']['steps']} steps, no evaluation) | "
             f"{m['training']['peak_rss_mb'] / 1024:.2f} | {fmt(m['training']['wall_s'], 1)} |",
             f"| evaluation (load, inference, full ranking) | {m['evaluation']['peak_rss_mb'] / 1024:.2f} | "
             f"{fmt(m['evaluation']['wall_s'], 1)} |", "",
             f"Training target < 6 GB on CPU: **{'met' if m.get('training_under_target') else 'NOT met'}**. "
             f"Reproduce: {reproduce(payload, 'memory')}."]
    return "\n".join(lines)


def sweep_points(sweep: Section, memory: Section) -> list[dict[str, Any]]:
    """The sweep's points plus the memory section's (Goodbooks-scale) point, by size."""
    pts = list((sweep or {}).get("results", {}).get("points", []))
    if memory and memory["results"]["users"] not in {p["users"] for p in pts}:
        pts.append({**memory["results"], "from_memory_section": True})
    return sorted(pts, key=lambda p: p["users"])


def sweep_part(payload: Section, memory: Section, rel: dict[str, str]) -> str:
    if not payload:
        return not_run("Scale sweep", "sweep")
    pts = sweep_points(payload, memory)
    lines = ["## Scale sweep", "",
             "Training: `profile_steps` seed edges/s (training alone); evaluation: a graphsage's embedding "
             "inference for every node, full ranking of the test split. Rows marked * come from the memory section.",
             "", "| % users | users | train edges | build s | build GiB | train seed edges/s | train GiB | inference s "
             "| ranking s | eval GiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for p in pts:
        star = "*" if p.get("from_memory_section") else ""
        lines.append(f"| {p['percent']:g}{star} | {fmt(p['users'])} | {fmt(p['train_edges'])} | "
                     f"{fmt(p['data_build']['synth_s'] + p['data_build']['build_s'], 1)} | "
                     f"{p['data_build']['peak_rss_mb'] / 1024:.2f} | "
                     f"{fmt(p['training']['seed_edges_per_s'], 0)} | {p['training']['peak_rss_mb'] / 1024:.2f} | "
                     f"{fmt(p['evaluation']['inference_s'], 2)} | {fmt(p['evaluation']['ranking_s'], 2)} | "
                     f"{p['evaluation']['peak_rss_mb'] / 1024:.2f} |")
    lines += img(rel, "sweep", "time and peak memory against the number of users", payload, "sweep")
    return "\n".join(lines)


def carried_name(name: str, row: dict[str, Any]) -> str:
    """A table row's model name, marked when ``bench --models`` carried the row over."""
    return f"{name} †" if row.get("measured_at") else name


def carried_note(models: dict[str, dict[str, Any]]) -> list[str]:
    """The footnote of rows carried over from an earlier invocation (``bench --models``)."""
    when = sorted({m["measured_at"] for m in models.values() if m.get("measured_at")})
    if not when:
        return []
    sources = sorted({m["source"] for m in models.values() if m.get("measured_at") and m.get("source")})
    return ["", f"† Measured by an earlier invocation ({', '.join(when)}) on the same data and carried over: this "
                "one ran with `--models` and trained only the unmarked models."
            + "".join(f" Rows {s}." for s in sources)]

