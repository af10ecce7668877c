"""The export and serving part of docs/RESULTS.md."""
from __future__ import annotations

from graphrec_dist.benchmarks.report_text import Section, fmt, not_run, reproduce


def serving_part(payload: Section) -> str:
    if not payload:
        return not_run("Export and serving", "serving")
    res = payload["results"]
    ex, sv = res["export"], res["serve"]
    lines = ["## Export and serving", "",
             f"{res['users']:,} users × {res['items']:,} items, `{res['preset']}`'s graphsage (freshly initialised: "
             "the costs do not depend on the weights).", "",
             f"- Export, top {ex['k']} per user ({ex['topk_rows']:,} rows) plus embeddings: **{fmt(ex['export_s'], 1)} s** "
             f"inside the command ({fmt(ex['child_wall_s'], 1)} s with start-up and loading), peak RSS "
             f"{fmt(ex['child_peak_rss_mb'] / 1024, 2)} GiB (target < 60 s). Command: `{res['export_command']}`.",
             f"- Serve: loaded and answering {fmt(sv['load_s'], 1)} s after start (`{res['serve_command']}`); "
             "`GET /recommend?user=ID&k=10` for random users, each client one keep-alive connection, clients "
             "and server on the same 2 cores:", "",
             "| concurrent clients | requests/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|"]
    for run in sv["runs"]:
        lines.append(f"| {run['clients']} | {fmt(run['requests_per_s'], 0)} | {fmt(run['p50_ms'], 2)} | "
                     f"{fmt(run['p99_ms'], 2)} | {run['errors']} |")
    lines += ["", "Target: p99 < 20 ms at 8 concurrent clients. Approximate top-k indexes (faiss, usearch) are not "
                  "built; the service and the export search exactly.", "", f"Reproduce: {reproduce(payload, 'serving')}."]
    return "\n".join(lines)
