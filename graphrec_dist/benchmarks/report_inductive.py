"""The inductive part of docs/RESULTS.md: cold items and new users, NDCG@10 mean ± std over splits."""
from __future__ import annotations

from typing import Any

from graphrec_dist.benchmarks.report_realdata import _pm
from graphrec_dist.benchmarks.report_text import Section, fmt, not_run, reproduce

COLUMNS = (("val", "warm val"), ("test", "warm test"), ("cold_val", "cold-item val"), ("cold_test", "cold-item test"),
           ("cold_user_val", "new-user val"), ("cold_user_test", "new-user test"))


def _mean(rows: dict[str, Any], row: str, split: str) -> float | None:
    return ((rows.get(row) or {}).get("summary", {}).get(split) or {}).get("mean")


def dataset_table(rows: dict[str, Any]) -> list[str]:
    lines = ["| model | chosen on validation | " + " | ".join(label for _, label in COLUMNS) + " | seconds per run |",
             "|---|" + "---|" * (len(COLUMNS) + 2)]
    for name in sorted(rows, key=lambda m: (not m.startswith("graphsage"), m)):  # the main model first
        row = rows[name]
        if "error" in row:
            lines.append(f"| {name} | | failed: {row['error']} |" + " |" * len(COLUMNS))
            continue
        cells = [row.get("tuning", {}).get("chosen_text", "–")]
        cells += [_pm(row["summary"].get(split)) for split, _ in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {fmt((row.get('wall_s') or {}).get('mean'), 1)} |")
    return lines


def verdicts(rows: dict[str, Any]) -> list[str]:
    """The issue's targets on the test means: cold items vs content_knn, new users vs EASE, warm cost."""
    out = []
    gs, knn = _mean(rows, "graphsage", "cold_test"), _mean(rows, "content_knn", "cold_test")
    if gs is not None and knn:
        out.append(f"- Cold items: graphsage {fmt(gs)} vs content_knn {fmt(knn)} test NDCG@10 = "
                   f"**{gs / knn:.2f}×** (target ≥ 1.2×).")
    blend = _mean(rows, "ease_content", "cold_test")
    if gs is not None and blend:
        out.append(f"- Cold items: graphsage {fmt(gs)} vs ease_content {fmt(blend)} test NDCG@10 = "
                   f"**{gs / blend:.2f}×**.")
    new, ease = _mean(rows, "graphsage", "cold_user_test"), _mean(rows, "ease", "cold_user_test")
    if new is not None and ease:
        out.append(f"- New users: graphsage {fmt(new)} vs EASE {fmt(ease)} test NDCG@10 "
                   f"({100 * new / ease:.0f}% of EASE).")
    new_blend = _mean(rows, "ease_content", "cold_user_test")
    if new is not None and new_blend:
        out.append(f"- New users: graphsage {fmt(new)} vs ease_content {fmt(new_blend)} test NDCG@10 "
                   f"({100 * new / new_blend:.0f}% of ease_content).")
    warm, plain = _mean(rows, "graphsage", "val"), _mean(rows, "graphsage, id_dropout=0", "val")
    if warm is not None and plain:
        out.append(f"- Warm cost of the unknown vector: validation NDCG@10 {fmt(warm)} vs {fmt(plain)} without "
                   f"it ({100 * (warm - plain) / plain:+.1f}%; allowed −2%).")
    return out


def inductive_part(payload: Section) -> str:
    if not payload:
        return not_run("Inductive: cold items and new users", "inductive")
    res = payload["results"]
    seeds = res.get("seeds", [])
    lines = ["## Inductive: cold items and new users", "",
             f"The protocols of [EVALUATION.md](EVALUATION.md): {100 * res['cold_items']:.0f}% of items lose every "
             f"training interaction (ranked, per user, against all cold items: several positives per user), "
             f"{100 * res['cold_users']:.0f}% of users are kept out of training (scored from their other "
             f"interactions, given as a history; nothing is retrained). NDCG@10, mean ± standard deviation over "
             f"{len(seeds)} split seeds ({seeds}); each model with its own preset, a baseline's values chosen on "
             "this data's warm validation by `graphrec-dist tune` (grids in the real-data tables above). Under "
             "the evaluator's tie rule a model that gives every cold item the same score ranks them all last "
             "(EASE: 0); popularity breaks its ties at random, which is chance level. mf and lightgcn cannot "
             "score a cold item or a user outside training at all."]
    for key, data in res.get("datasets", {}).items():
        if data.get("skipped"):
            lines += ["", f"### {key}", "", f"Not run: {data['skipped']}."]
            continue
        lines += ["", f"### {data['name']}", ""] + dataset_table(data["rows"]) + [""] + verdicts(data["rows"])
    timing = res.get("recommend_history")
    if timing:
        lines += ["", f"`recommend --history` after loading, {timing['num_users']:,} users × "
                      f"{timing['num_books']:,} items, `{timing['preset']}`'s model: median "
                      f"{fmt(timing['median_s'], 3)} s, slowest {fmt(timing['max_s'], 3)} s of {timing['repeats']} "
                      "10-item histories (target < 1 s)."]
    lines += ["", f"Reproduce: {reproduce(payload, 'inductive')}."]
    return "\n".join(lines)
