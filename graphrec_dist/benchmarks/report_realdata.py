"""The real-data part of docs/RESULTS.md: every model over several split seeds, mean ± std."""
from __future__ import annotations

from typing import Any

from graphrec_dist.benchmarks.report_text import Section, carried_name, carried_note, fmt, not_run, reproduce


def _pm(stat: dict[str, Any] | None) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    return fmt(stat["mean"]) + (f" ± {fmt(stat['std'])}" if stat.get("std") is not None else "")


def realdata_table(res: dict[str, Any]) -> list[str]:
    lines = ["| model | chosen on validation | val NDCG@10 | test NDCG@10 | test Hit@10 | test NDCG@20 | test MRR | "
             "seconds per run | command |",
             "|---|---|---|---|---|---|---|---|---|"]
    models, ranking = res["models"], res.get("ranking", [])
    for name in ranking + [m for m in models if m not in ranking]:
        m = models[name]
        if "error" in m:
            lines.append(f"| {carried_name(name, m)} | | failed: {m['error']} | | | | | | |")
            continue
        s = m["summary"]
        test = _pm(s["test_ndcg@10"])
        if ranking and name == ranking[0]:
            test = f"**{test}**"
        wall = s.get("wall_s", {}).get("mean")
        chosen = m.get("tuning", {}).get("chosen_text", "–")
        lines.append(f"| {carried_name(name, m)} | {chosen} | {_pm(s['val_ndcg@10'])} | {test} | "
                     f"{_pm(s['test_hit@10'])} | {_pm(s['test_ndcg@20'])} | {_pm(s['test_mrr'])} | {fmt(wall, 1)} | "
                     f"`{m['short_command']}` |")
    return lines


def grids_note(res: dict[str, Any]) -> list[str]:
    """Each tuned row's grid and where it was chosen (`graphrec-dist tune`, run by the bench)."""
    rows = [(m, row["tuning"]) for m, row in res["models"].items() if row.get("tuning", {}).get("grid")]
    if not rows:
        return []
    lines = ["", "Grids: every tuned value above was chosen on this dataset's validation NDCG@10 by "
             "`graphrec-dist tune PRESET …` (the preset's `tune.grid`; chosen values per split seed in "
             "order, one value where every split chose it):", ""]
    return lines + [f"- {m}: {t['grid_text']}" for m, t in rows]


def popularity_table(res: dict[str, Any]) -> list[str]:
    """Test NDCG@10 per popularity group of the held-out item (mean over seeds), every model."""
    models, ranking = res["models"], res.get("ranking", [])
    rows = [m for m in ranking if models[m]["summary"].get("by_popularity_ndcg@10")]
    if not rows:
        return []
    bounds = models[rows[0]]["summary"]["by_popularity_train_count"]
    head = " | ".join(f"{lo:,}–{hi:,}" for lo, hi in bounds)
    lines = ["", "Test NDCG@10 by the held-out item's number of training interactions (5 groups of about "
             "equal size, split seed " f"{res['seeds'][0]}'s bounds shown; mean ± std over the seeds; "
             "`graphrec-dist evaluate --run DIR --split test --by-popularity 5`):", "",
             f"| model | {head} |", "|---|" + "---|" * len(bounds)]
    for m in rows:
        cells = " | ".join(_pm(g) for g in models[m]["summary"]["by_popularity_ndcg@10"])
        lines.append(f"| {carried_name(m, models[m])} | {cells} |")
    return lines


def realdata_verdict(res: dict[str, Any]) -> list[str]:
    """graphsage against the best other model and against graphsage_ui, on the seed means."""
    models, ranking = res["models"], res.get("ranking", [])
    if "graphsage" not in ranking:
        return []
    mean = {m: models[m]["summary"]["test_ndcg@10"]["mean"] for m in ranking}
    others = [m for m in ranking if m not in ("graphsage", "graphsage_ui")]
    lines = [""]
    if others:
        best = others[0]
        verb = "beats" if mean["graphsage"] >= mean[best] else "trails"
        lines.append(f"**Verdict:** on the mean over {len(res['seeds'])} split seeds graphsage {verb} the best "
                     f"baseline, {best} ({fmt(mean['graphsage'])} vs {fmt(mean[best])} test NDCG@10, "
                     f"{100 * mean['graphsage'] / mean[best]:.0f}%).")
    if "graphsage_ui" in mean:
        lines.append(f"Side relations: graphsage {fmt(mean['graphsage'])} vs graphsage_ui (user–item graph only) "
                     f"{fmt(mean['graphsage_ui'])}.")
    return lines


def realdata_part(payload: Section, section: str = "realdata") -> str:
    title = "Quality on real data" if section == "realdata" else "Quality on real Goodbooks Graph3"
    if not payload:
        return not_run(title, section)
    res = payload["results"]
    if res.get("skipped"):
        return f"## {title}\n\nNot run: {res['skipped']}."
    seeds = res.get("seeds", [])
    lines = [f"## {title} ({res.get('data_dir')}, spec `{res.get('spec')}`)", "",
             f"Every model with its own preset, on real interactions read by the bring-your-own-CSV builder, "
             f"over {len(seeds)} leave-one-out splits (`data.split.seed` in {seeds}); mean ± standard deviation "
             "over the splits. Each baseline's settings were chosen on this dataset's validation NDCG@10 by the "
             "bench (grids below); graphsage runs its shipped preset, not tuned per dataset. Test is reported "
             "once per final model. One split of ~1,000 users carries a standard error of "
             "about 0.013 NDCG@10 (less with more users: it shrinks as 1/sqrt(users)), which is why the table "
             "averages splits.", ""]
    lines += realdata_table(res)
    lines += grids_note(res)
    lines += carried_note(res["models"])
    lines += realdata_verdict(res)
    lines += popularity_table(res)
    if res.get("common_overrides"):
        lines += ["", "`…` = the overrides of split seed " f"{seeds[0] if seeds else ''}: `"
                  + " ".join(res["common_overrides"]) + "` (other seeds change `data.split.seed` and the bundle "
                                 "folder)."]
    lines += ["", f"Reproduce: {reproduce(payload, section)}."]
    return "\n".join(lines)
