"""The sampled-training race of docs/RESULTS.md: trainer vs the plain PyG pipeline, one process."""
from __future__ import annotations

from graphrec_dist.benchmarks.report_text import Section, fmt, not_run, reproduce

PHASES = ("sampling_s", "forward_s", "backward_s", "optimizer_s")

LABELS = {"trainer_blocks": "graphrec_dist trainer, block sampler (`train.sampler=blocks`, default)",
          "trainer_pyg": "graphrec_dist trainer, PyG loader (`train.sampler=pyg`, the path before)"}


def _label(name: str) -> str:
    if name.startswith("plain_workers"):
        return f"plain PyG pipeline, `num_workers={name[len('plain_workers'):]}`"
    return LABELS.get(name, name)


def sampled_speed_part(payload: Section) -> str:
    if not payload:
        return not_run("Sampled training against the plain PyG pipeline", "sampled_speed")
    res = payload["results"]
    summary, best = res["summary"], res["best_plain"]
    sizes = res.get("sizes", {})
    lines = ["## Sampled training against the plain PyG pipeline", "",
             f"{res['num_users']:,} users, {res['train_edges']:,} training edges; {sizes.get('layers')} layers, "
             f"fanout {sizes.get('fanout')}, batch {sizes.get('batch_size')} seed edges, {sizes.get('neg')} negative, "
             f"{sizes.get('dim')} dimensions, {res['threads']} threads. All pipelines ran in one process, interleaved "
             f"in {len(next(iter(res['runs'].values())))} rounds; each row is the median round. Phases are "
             "milliseconds per step (block sampling happens inside the model's forward pass and is booked as "
             "sampling).", "",
             "| pipeline | seed edges/s | vs best plain | sampling | forward | backward | optimizer |",
             "|---|---|---|---|---|---|---|"]
    base, steps = summary[best]["seed_edges_per_s"], res.get("steps") or 1
    for name in sorted(summary, key=lambda n: -summary[n]["seed_edges_per_s"]):
        row = summary[name]
        phases = " | ".join(fmt(1000 * row[k] / steps, 0) for k in PHASES)
        lines.append(f"| {_label(name)} | {fmt(row['seed_edges_per_s'], 0)} | {row['seed_edges_per_s'] / base:.2f}× | "
                     f"{phases} |")
    lines += ["", f"**Ratio:** the trainer with block sampling runs at **{res['ratio_blocks_vs_best_plain']:.2f}×** "
              f"the "
                  f"best plain pipeline (target ≥ 2.0×); on PyG's loader it ran at "
                  f"{res['ratio_pyg_vs_best_plain']:.2f}×.",
              "", f"Trainer call: `{res.get('trainer_command', '')}`.", "", f"Reproduce: "
                                            f"{reproduce(payload, 'sampled_speed')}."]
    return "\n".join(lines)
