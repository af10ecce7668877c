"""The quality part of docs/RESULTS.md: the table, the sampled protocol and the verdict on
whether graphsage is the best model, with the evidence the JSON holds."""
from __future__ import annotations

import math
from typing import Any

from graphrec_dist.benchmarks.report_text import (
    QUALITY_COLUMNS,
    Section,
    carried_name,
    carried_note,
    fmt,
    img,
    not_run,
    reproduce,
    scale_of,
)
from graphrec_dist.config import RELATION_NAMES


def quality_table(models: dict[str, dict[str, Any]], ranking: list[str]) -> list[str]:
    head = "| model | " + " | ".join(c.replace("hit", "Hit").replace("ndcg", "NDCG") for c in QUALITY_COLUMNS)
    lines = [head + " | chosen on validation | best val epoch | training s | command (config: run dir's config.yaml) |",
             "|---|" + "---|" * (len(QUALITY_COLUMNS) + 4)]
    order = ranking + [m for m in models if m not in ranking]
    leader = ranking[0] if ranking else None
    for name in order:
        m = models[name]
        if m.get("error"):
            lines.append(f"| {carried_name(name, m)} | failed: {m['error']} |" + " |" * (len(QUALITY_COLUMNS) + 3))
            continue
        cells = [f"**{fmt(m['test'].get(c))}**" if name == leader and c == "ndcg@10" else fmt(m["test"].get(c))
                 for c in QUALITY_COLUMNS]
        # rows of a JSON made before the bench tuned baselines say so
        chosen = m.get("tuning", {}).get("chosen_text", "preset values (not tuned on this data)")
        lines.append(f"| {carried_name(name, m)} | " + " | ".join(cells) + f" | {chosen} | "
                                                 f"{fmt(m.get('best_val_epoch'))} | "
                                                 f"{fmt(m.get('train_s'), 1)} "
                     f"| `{m.get('short_command', m['command'])}` |")
    return lines


def sampled_table(res: dict[str, Any]) -> list[str]:
    s = res.get("graphsage_sampled")
    if not s:
        return []
    full = res["models"]["graphsage"]["test"]
    metrics = s.get("metrics", {})
    lines = ["", "### graphsage under the notebooks' sampled protocol", "",
             "Rank of the held-out book among C sampled non-interacted books (the notebooks' protocol) next to "
             "full ranking over every book:", "", "| protocol | Hit@10 | NDCG@10 | Hit@50 | NDCG@50 |",
             "|---|---|---|---|---|",
             f"| full ranking | {fmt(full.get('hit@10'))} | {fmt(full.get('ndcg@10'))} | {fmt(full.get('hit@50'))} "
             f"| {fmt(full.get('ndcg@50'))} |"]
    for c in s.get("candidates", []):
        get = lambda k, c=c: metrics.get(f"{k}/C={c}")  # noqa: E731 - a local shorthand
        lines.append(f"| sampled, C={c} | {fmt(get('hit@10'))} | {fmt(get('ndcg@10'))} | {fmt(get('hit@50'))} "
                     f"| {fmt(get('ndcg@50'))} |")
    lines += ["", f"Command: `{s['command']}`. The sampled numbers are far higher because the held-out book only has "
              "to beat C random books, not the whole catalogue; only full ranking is comparable across papers and "
              "runs."]
    return lines


def verdict(res: dict[str, Any]) -> list[str]:
    """Is graphsage the best? If not: by how much, and what the JSON shows about why."""
    models, ranking = res["models"], res.get("ranking", [])
    if "graphsage" not in ranking:
        return ["", "**Verdict:** graphsage has no test metrics in this run, so no verdict."]
    lead = ranking[0]
    g = models["graphsage"]
    if lead == "graphsage":
        second = ranking[1] if len(ranking) > 1 else None
        margin = (g["test"]["ndcg@10"] / models[second]["test"]["ndcg@10"] - 1) * 100 if second else None
        return ["", "**Verdict:** graphsage on Graph3 is the best model in this table by test NDCG@10"
                + (f" ({fmt(margin, 1)}% above {second})." if second else ".")]
    lead_v, g_v = models[lead]["test"]["ndcg@10"], g["test"]["ndcg@10"]
    out = ["", f"**Verdict: graphsage is NOT the best model in this table.** {lead} leads on test NDCG@10 "
           f"({fmt(lead_v)} vs {fmt(g_v)}, graphsage at {100 * g_v / lead_v:.0f}% of it; graphsage ranks "
           f"{ranking.index('graphsage') + 1} of {len(ranking)}). Evidence in this run:"]
    out += [f"- {line}" for line in evidence(res)]
    return out


def budget_limited(models: dict[str, dict[str, Any]]) -> list[str]:
    """Trained models whose best validation epoch was the last one they ran, with a learning rate
    still far from zero (a decayed schedule ends at its last epoch by design)."""
    return [name for name, m in models.items() if not m.get("closed_form") and not m.get("error")
            and m.get("epochs_run") and m.get("best_val_epoch") == m["epochs_run"] and not m.get("lr_decayed")]


def noise_bound(ndcg: float | None, users: int | None) -> float | None:
    """An upper bound on the standard error of a mean NDCG over ``users``: per-user NDCG lies in
    [0, 1], so its variance is at most its mean, and the error at most sqrt(mean / users)."""
    if ndcg is None or not users:
        return None
    return math.sqrt(ndcg / users)


def same_graph_comparison(models: dict[str, dict[str, Any]]) -> list[str]:
    """graphsage against lightgcn on the same graph (user–book only, and all of Graph3): where the
    gap comes from, the model or the relations."""
    ndcg = {m: models.get(m, {}).get("test", {}).get("ndcg@10") for m in
            ("graphsage", "graphsage_ui", "lightgcn", "lightgcn_ui")}
    if any(v is None or v <= 0 for v in ndcg.values()):
        return []
    side_g = (ndcg["graphsage"] / ndcg["graphsage_ui"] - 1) * 100
    side_l = (ndcg["lightgcn"] / ndcg["lightgcn_ui"] - 1) * 100
    ratio_ui, ratio_g3 = ndcg["graphsage_ui"] / ndcg["lightgcn_ui"], ndcg["graphsage"] / ndcg["lightgcn"]
    line = (f"Same graph, other model: on the user–book graph graphsage_ui reaches {fmt(ndcg['graphsage_ui'])} against "
            f"lightgcn_ui's {fmt(ndcg['lightgcn_ui'])} ({100 * ratio_ui:.0f}%); on Graph3 {fmt(ndcg['graphsage'])} "
            f"against {fmt(ndcg['lightgcn'])} ({100 * ratio_g3:.0f}%). Graph3's side relations add {side_g:.0f}% to "
            f"graphsage and {side_l:.0f}% to lightgcn")
    if ratio_ui < 1 and ratio_ui < ratio_g3 and side_g > side_l:
        line += ": the gap is in the user–book (collaborative) part, which Graph3 narrows but does not close"
    return [line + "."]


def evidence(res: dict[str, Any]) -> list[str]:
    models = res["models"]
    g = models["graphsage"]
    lines = []
    curve = [c for c in g.get("curve", []) if c.get("val_ndcg@10") is not None]
    if curve and g.get("best_val_epoch") == curve[-1]["epoch"] and g.get("lr_decayed"):
        lines.append(f"graphsage's best validation epoch is its last ({g['best_val_epoch']}), where its learning-rate "
                     "schedule reaches zero: the run ended by design, not for lack of budget.")
    elif curve and g.get("best_val_epoch") == curve[-1]["epoch"]:
        lines.append(f"graphsage's best validation epoch is its last ({g['best_val_epoch']}): it was still improving "
                     "when its epoch budget ran out, so the table compares it before convergence.")
    elif curve:
        lines.append(f"graphsage's best validation epoch was {g.get('best_val_epoch')} of the {curve[-1]['epoch']} it "
                     f"ran: "
                     "later epochs did not improve validation NDCG@10 at this configuration.")
    same_graph = same_graph_comparison(models)  # includes graphsage vs graphsage_ui when lightgcn ran
    if same_graph:
        lines += same_graph
    elif "graphsage_ui" in models and models["graphsage_ui"]["test"].get("ndcg@10") is not None:
        ui = models["graphsage_ui"]["test"]["ndcg@10"]
        delta = (g["test"]["ndcg@10"] / ui - 1) * 100 if ui else None
        lines.append(f"Side relations: graphsage (all of Graph3) vs graphsage_ui (user–book only): "
                     f"{fmt(g['test']['ndcg@10'])} vs {fmt(ui)} NDCG@10 ({fmt(delta, 1)}%).")
    for other in ("ease", "lightgcn", "lightgcn_ui", "mf"):
        o = models.get(other)
        if o and o.get("train_s") is not None and g.get("train_s") is not None:
            lines.append(f"{other}: {fmt(o['test'].get('ndcg@10'))} NDCG@10 after {fmt(o['train_s'], 1)} s of training "
                         f"(graphsage: {fmt(g['train_s'], 1)} s).")
    lines.append(ablation_summary(res.get("ablation", {}), res.get("num_users")))
    return lines


def ablation_summary(ab: dict[str, Any], users: int | None) -> str:
    """One line: which removals changed test NDCG@10 beyond the noise of a difference of two runs."""
    if not ab.get("run"):
        return f"The relation-type ablation was not run here ({ab.get('why', 'not requested')})."
    deltas = {k: v["delta_ndcg@10"] for k, v in ab.get("results", {}).items() if v.get("delta_ndcg@10") is not None}
    bound = noise_bound(ab.get("baseline_ndcg@10"), users)
    # Two independent runs: the difference's error is at most sqrt(2) x the bound; call a change
    # signal only beyond twice that.
    limit = 2 * math.sqrt(2) * bound if bound is not None else 0.0
    clear = sorted((k for k, d in deltas.items() if abs(d) > limit), key=deltas.get)
    small = [k for k in RELATION_NAMES if k in deltas and k not in clear]
    text = "Relation ablation (table below): "
    text += ("removing " + ", ".join(f"{k} ({_signed(deltas[k])})" for k in clear) if clear else "no removal")
    text += (f" changed test NDCG@10 by more than {fmt(limit)} (2·√2 × sqrt(NDCG@10 / users), a bound on the noise "
             "of a difference of two runs)")
    if small:
        text += "; " + ", ".join(f"{k} ({_signed(deltas[k])})" for k in small) + " stayed within it"
    return text + "."


def _signed(x: float | None) -> str:
    return "–" if x is None else f"{x:+.4f}"


def ablation_table(ab: dict[str, Any]) -> list[str]:
    """graphsage without one side relation at a time, against the full graphsage of the table."""
    if not ab.get("run"):
        return []
    lines = ["", "### Relation ablation: graphsage without one side relation", "",
             f"Same preset, data, seed and epochs as graphsage above (test NDCG@10 {fmt(ab.get('baseline_ndcg@10'))}); "
             "Δ < 0: the model is worse without the relation.", "",
             "| relation removed | Hit@10 | NDCG@10 | Δ NDCG@10 | best val epoch | training s | command |",
             "|---|---|---|---|---|---|---|"]
    results = ab.get("results", {})
    for rel in [r for r in RELATION_NAMES if r in results] + [r for r in results if r not in RELATION_NAMES]:
        r = results[rel]
        if "error" in r:
            lines.append(f"| {rel} | failed: {r['error']} | | | | | |")
            continue
        lines.append(f"| {rel} | {fmt(r.get('hit@10'))} | {fmt(r.get('ndcg@10'))} | {_signed(r.get('delta_ndcg@10'))} "
                     f"| "
                     f"{r.get('best_val_epoch')} | {fmt(r.get('train_s'), 1)} | `{r.get('command')}` |")
    return lines


def time_budget_note(plan: dict[str, Any]) -> list[str]:
    """What the full plan's race gave each model: seconds, epoch size, runs at once."""
    budget = [o.split("=", 1)[1] for o in plan.get("quality_overrides", []) if o.startswith("train.time_budget_s=")]
    if not budget:
        return []
    own = plan.get("quality_model_overrides") or {}
    per_model = "; ".join(f"{m}: `{' '.join(o)}`" for m, o in own.items() if o)
    jobs = plan.get("quality_jobs", 1)
    return [f"**Budget: every trained model gets {fmt(float(budget[0]), 0)} seconds of training** (validation "
            "excluded; `train.time_budget_s`, training stops after the epoch that spends it), "
            + (f"{jobs} models trained at once, one process and one thread each, so each had about one of the "
               "2 cores. " if jobs > 1 else "")
            + (f"Per-model overrides: {per_model}." if per_model else ""), ""]


def quality_part(payload: Section, rel: dict[str, str]) -> str:
    """The Quality section of docs/RESULTS.md."""
    if not payload:
        return not_run("Quality", "quality")
    res = payload["results"]
    lines = [f"## Quality ({scale_of(res.get('num_users'))}, {fmt(res.get('num_books'))} books, "
             f"{fmt(res.get('train_edges'))} training edges)", "",
             "Full-ranking leave-one-out test metrics (every book is a candidate; training books masked). Every "
             "model trains on the same generated data with seed 0; each row's command names its preset, and its run "
             "directory holds the exact `config.yaml`. Best validation epoch: the epoch whose validation NDCG@10 "
             "chose the checkpoint that was tested (closed-form models fit once).", ""]
    caps = [o for o in res.get("plan", {}).get("quality_overrides", []) if o.startswith("train.epochs=")]
    if caps:
        lines += [f"**Budget: every trained model is capped at {caps[0].split('=', 1)[1]} epochs here** (the reduced "
                  "plan, to keep `make bench` short), so this is a quick table, not a converged one; "
                  "models that need many epochs (MF, LightGCN) are the most affected. `--full` trains each model for "
                  "its preset's epochs with early stopping.", ""]
    lines += time_budget_note(res.get("plan", {}))
    lines += quality_table(res["models"], res.get("ranking", []))
    lines += carried_note(res["models"])
    limited = budget_limited(res["models"])
    if limited:
        lines += ["", "Still improving when the budget ran out (best validation epoch = last epoch run): "
                  + ", ".join(limited) + "."]
    if res.get("common_overrides"):
        lines += ["", "`…` = the overrides every model shares (same data, same seed): `"
                  + " ".join(res["common_overrides"]) + "`, plus its own `run.out_dir` (whose `config.yaml` is the "
                  "full config used)."]
    lines += verdict(res)
    lines += sampled_table(res)
    lines += ablation_table(res.get("ablation", {}))
    lines += img(rel, "quality_bars", "test Hit@10 and NDCG@10 of every model", payload, "quality")
    lines += img(rel, "training_curves", "validation NDCG@10 per epoch of every model", payload, "quality")
    lines += img(rel, "time_to_quality", "validation NDCG@10 against training seconds, every model", payload,
                 "quality")
    lines += ["", f"Reproduce the table: {reproduce(payload, 'quality')}."]
    return "\n".join(lines)
