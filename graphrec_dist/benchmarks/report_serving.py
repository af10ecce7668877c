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
             f"- Export, top {ex['k']} per user ({ex['topk_rows']:,} rows) plus embeddings: "
             f"**{fmt(ex['export_s'], 1)} s** "
             f"inside the command ({fmt(ex['child_wall_s'], 1)} s with start-up and loading), peak RSS "
             f"{fmt(ex['child_peak_rss_mb'] / 1024, 2)} GiB (target < 60 s). Command: `{res['export_command']}`.",
             f"- Serve: loaded and answering {fmt(sv['load_s'], 1)} s after start (`{res['serve_command']}`); "
             "`GET /recommend?user=ID&k=10` for random users, each client one keep-alive connection, clients "
             "and server on the same 2 cores:", "",
             "| concurrent clients | requests/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|"]
    for run in sv["runs"]:
        lines.append(f"| {run['clients']} | {fmt(run['requests_per_s'], 0)} | {fmt(run['p50_ms'], 2)} | "
                     f"{fmt(run['p99_ms'], 2)} | {run['errors']} |")
    lines += ["", "Target: p99 < 20 ms at 8 concurrent clients (each client a process with one keep-alive "
                  "connection; `serve --index exact`, the default).", ""]
    if res.get("index"):
        lines += index_part(res["index"])
    lines += [f"Reproduce: {reproduce(payload, 'serving')}.", ""]
    return "\n".join(lines)


def index_part(tables: dict) -> list[str]:
    """The recall/speed table of every index on both vector tables."""
    names = {"bundle": "users × books, PureSVD vectors, each user's training books left out",
             "synthetic": "synthetic items around 1,000 centres, nothing left out"}
    lines = ["### Top-k indexes: recall against exact search, and speed", "",
             "`--index exact|faiss|usearch` (faiss: IVF-Flat over k-means cells, `--nprobe` scanned; usearch: "
             "HNSW, `--expansion` candidates kept). Batch: the top 100 of every query, 2 threads (what export "
             "does). One query: one top 10 at a time, 1 thread (what one serve request does). Recall@k: the share "
             "of the exact top k the index returns.", ""]
    for key, table in tables.items():
        if not isinstance(table, dict) or "indexes" not in table:
            continue
        lines += [f"**{table['items']:,} items × {table['dim']} dims, {table['queries']:,} queries** "
                  f"({names.get(key, key)}):", "",
                  "| index | setting | build s | batch queries/s | one query p50 ms | p99 ms | recall@10 "
                  "| recall@100 |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in table["indexes"]:
            setting = f"{row['param']}={row['value']}" if row["param"] else "—"
            lines.append(f"| {row['index']} | {setting} | {fmt(row['build_s'], 1)} | "
                         f"{fmt(row['batch_queries_per_s'], 0)} | "
                         f"{fmt(row['p50_ms'], 2)} | {fmt(row['p99_ms'], 2)} | {fmt(row['recall@10'], 3)} | "
                         f"{fmt(row['recall@100'], 3)} |")
        lines.append("")
    return lines
