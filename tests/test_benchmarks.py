"""Tiny-scale smoke tests of the bench functions, the child-process runner and the report."""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest

from graphrec_dist import cli as top_cli
from graphrec_dist.benchmarks import common, report
from graphrec_dist.benchmarks.cli import parse_sections
from graphrec_dist.benchmarks.plan import BenchPlan, data_overrides
from graphrec_dist.benchmarks.training import race
from graphrec_dist.errors import UserError

TINY_USERS = 300
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 300-user generated bundle inside a bench folder, built once for this module."""
    from graphrec_dist.config import load_config
    from graphrec_dist.data.prepare import prepare_bundle

    out = tmp_path_factory.mktemp("bench")
    plan = BenchPlan(mode="reduced", out_dir=out, repeats=1)
    bundle = prepare_bundle(load_config(None, data_overrides(plan, TINY_USERS)).data)
    return plan, bundle


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_run_child_reads_the_peak_rss_of_the_child(tmp_path):
    code = "b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"
    res = common.run_child([sys.executable, "-c", code], timeout_s=60, log_path=tmp_path / "alloc.log")
    assert res.returncode == 0
    assert res.peak_rss_mb > 190  # the 200 MiB the child touched, not the parent's size
    failed = common.run_child([sys.executable, "-c", "raise SystemExit(3)"], timeout_s=60)
    assert failed.returncode == 3


def test_run_child_kills_a_child_past_its_timeout():
    res = common.run_child([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=1)
    assert res.returncode == -9
    assert res.wall_s < 15


def test_call_in_child_returns_the_result_with_its_cost(tmp_path):
    out = common.call_in_child("graphrec_dist.benchmarks.common:machine_info", {}, tmp_path, 120, tag="machine")
    assert out["logical_cores"] >= 1 and out["torch"]
    assert _finite_positive(out["child_peak_rss_mb"]) and _finite_positive(out["child_wall_s"])


def test_call_in_child_failure_names_the_stage_and_its_log(tmp_path):
    with pytest.raises(common.BenchError, match=r"'broken'.*logs/broken\.log\.err"):
        common.call_in_child("graphrec_dist.benchmarks.common:no_such_function", {}, tmp_path, 120, tag="broken")


def test_machine_info_describes_cpu_libraries_and_backends():
    info = common.machine_info()
    for key in ("cpu_model", "logical_cores", "ram_gb", "torch", "torch_geometric", "sampling_backends", "git_commit"):
        assert key in info
    assert set(info["sampling_backends"]) == {"pyg-lib", "torch-sparse"}
    assert common.median([3.0, 1.0, 2.0]) == 2.0


def test_sections_parse_in_canonical_order_and_unknown_ones_are_user_errors():
    assert parse_sections("sampling,quality") == ["quality", "sampling"]
    assert "realbooks" in parse_sections("all") and "realbooks" not in parse_sections("all", full=False)
    assert parse_sections("realbooks", full=False) == ["realbooks"]
    with pytest.raises(UserError, match="nope"):
        parse_sections("sampling,nope")
    assert top_cli.main(["bench", "--sections", "nope", "--no-report"]) == 2
    assert top_cli.main(["bench", "--models", "graphsage,nope", "--no-report"]) == 2
    assert top_cli.main(["bench", "--seeds", "0,x", "--no-report"]) == 2


def test_seeds_and_models_set_the_real_data_and_inductive_plans(tmp_path):
    from graphrec_dist.benchmarks.cli import build_parser, make_plan

    args = build_parser().parse_args(["--out", str(tmp_path), "--seeds", "0,2,4", "--models", "content_knn,ease,mf"])
    plan = make_plan(args)
    assert plan.real_seeds == plan.inductive_seeds == [0, 2, 4]
    assert plan.quality_models == ["mf", "ease"] and plan.inductive_models == ["mf", "ease", "content_knn"]


def test_race_reports_who_reaches_the_target_first():
    ref = [{"step": 0, "train_s": 0.0, "val_ndcg@10": 0.0}, {"step": 10, "train_s": 5.0, "val_ndcg@10": 0.05},
           {"step": 20, "train_s": 10.0, "val_ndcg@10": 0.10}]
    ours = [{"step": 50, "train_s": 2.0, "val_ndcg@10": 0.12}, {"step": 100, "train_s": 4.0, "val_ndcg@10": 0.2}]
    out = race(ref, ours)
    assert out["target_val_ndcg@10"] == pytest.approx(0.09)
    assert out["reference"] == {"train_s": 10.0, "step": 20}
    assert out["trainer"] == {"train_s": 2.0, "step": 50}
    assert out["time_ratio_reference_over_trainer"] == pytest.approx(5.0)


def test_run_summary_reads_the_trainers_metrics_rows():
    from graphrec_dist.benchmarks.quality import summarize_run
    from graphrec_dist.benchmarks.training import trainer_curve

    rows = [{"epoch": 0, "step": 10, "loss": 0.6, "epoch_time_s": 2.0, "edges_per_s": 100.0, "val_ndcg@10": 0.05},
            {"epoch": 1, "step": 20, "loss": 0.5, "epoch_time_s": 3.0, "edges_per_s": 90.0, "val_ndcg@10": 0.07},
            {"epoch": 2, "step": 30, "loss": 0.4, "epoch_time_s": 2.5, "edges_per_s": 95.0, "val_ndcg@10": 0.06}]
    record = {"command": "graphrec-dist train x", "run_dir": "runs/x", "wall_s": 9.0, "peak_rss_mb": 10.0,
              "reused": False, "epochs": rows, "test_metrics": {"ndcg@10": 0.066, "hit@10": 0.1, "best_epoch": 1}}
    out = summarize_run(record)
    assert out["best_val_epoch"] == 2 and out["train_s"] == 7.5 and out["epochs_run"] == 3  # counted from 1
    assert out["test"] == {"ndcg@10": 0.066, "hit@10": 0.1}
    curve = trainer_curve(record, steps_per_epoch=10)
    assert [(p["step"], p["train_s"]) for p in curve] == [(10, 2.0), (20, 5.0), (30, 7.5)]


def test_sampling_throughput_on_a_tiny_graph(tiny):
    from graphrec_dist.benchmarks.plan import bundle_dir
    from graphrec_dist.benchmarks.sampling import measure_sampling

    plan, _ = tiny
    res = measure_sampling(bundle_dir(plan, TINY_USERS), batch_size=256, num_neighbors=[5, 5], workers=[0, 1],
                           batches=2, repeats=1)
    installed = [r for r in res["rows"] if r["installed"]]
    assert {r["num_workers"] for r in installed} == {0, 1}
    for row in installed:
        assert row["batches"] == 2 and _finite_positive(row["seed_edges_per_s"])
    assert res["train_edges"] > 0 and res["num_users"] == TINY_USERS


def test_path_product_bench_times_each_product_and_leaves_the_dense_threshold_as_it_was(tiny, capsys):
    import path_product  # benchmarks/experiments (conftest.py)

    from graphrec_dist.models.paths import _Relation

    plan, _ = tiny
    ratio = _Relation.DENSE_RATIO
    res = path_product.main(["configs/demo.yaml", *data_overrides(plan, TINY_USERS), "model.path.relations=[similar]",
                             "--rounds", "3"])
    for key in ("csr_ms", "enumerated_ms", "dense_ms", "csr_madds", "enumerated_madds", "scatter_cost", "density"):
        assert _finite_positive(res[key]), key
    assert _Relation.DENSE_RATIO == ratio
    assert "dense" in capsys.readouterr().out


def test_reference_loop_trains_and_validates_on_a_tiny_graph(tiny):
    from graphrec_dist.benchmarks.reference_loop import run_reference

    plan, bundle = tiny
    overrides = data_overrides(plan, TINY_USERS) + ["train.batch_size=64", "train.num_neighbors=[5,5]",
                                                    "model.emb_dim=8", "model.hidden_dim=8"]
    res = run_reference(None, overrides, time_budget_s=60, max_steps=6, eval_every_steps=3)
    assert res["steps"] == 6 and res["steps_per_epoch"] == 5  # 300 users: 4 batches of 64 and one of 44
    assert [p["step"] for p in res["curve"]] == [0, 3, 6]
    for p in res["curve"]:
        assert 0.0 <= p["val_ndcg@10"] <= 1.0 and 0.0 <= p["val_ndcg@10_raw_table"] <= 1.0
    assert 0.0 <= res["fallback_share_pos"] <= 1.0 and _finite_positive(res["seed_users_per_s"])


def test_reference_full_inference_equals_sampling_every_neighbour(tiny):
    import torch
    from torch_geometric.loader import NeighborLoader

    from graphrec_dist.benchmarks.reference_loop import ReferenceSAGE, full_embeddings, user_book_graph

    _, bundle = tiny
    torch.manual_seed(0)
    model = ReferenceSAGE(bundle.num_users, bundle.num_books, 8, 8, 2)
    data = user_book_graph(bundle)
    full = full_embeddings(model, data)
    batch = next(iter(NeighborLoader(data, num_neighbors=[-1, -1], input_nodes=("user", torch.arange(10)),
                                     batch_size=10)))
    with torch.no_grad():
        out = model({"user": batch["user"].n_id, "book": batch["book"].n_id}, batch.edge_index_dict)
    assert torch.allclose(out["user"][:10], full["user"][:10], atol=1e-5)


# ----- the report, from hand-made section JSON -----

def _payload(name: str, results: dict, mode: str = "reduced") -> dict:
    return common.section_payload(name, mode, f"graphrec-dist bench --sections {name}",
                                  {**results, "section_wall_s": 1.0, "plan": {}})


def _quality_results() -> dict:
    def model(ndcg, epoch, curve):
        return {"command": "graphrec-dist train configs/demo.yaml", "run_dir": "bench_out/runs/x",
                "config": "bench_out/runs/x/config.yaml", "best_val_epoch": epoch, "epochs_run": len(curve),
                "train_s": 12.0, "wall_s": 20.0,
                "peak_rss_mb": 500.0, "reused": False,
                "test": {"hit@10": 2 * ndcg, "hit@20": 3 * ndcg, "hit@50": 4 * ndcg, "ndcg@10": ndcg,
                         "ndcg@20": 1.2 * ndcg, "ndcg@50": 1.4 * ndcg},
                "curve": [{"epoch": i + 1, "val_ndcg@10": v, "loss": 0.5, "epoch_s": 1.0} for i, v in enumerate(curve)]}

    return {"num_users": 2000, "num_books": 3991, "train_edges": 180000,
            "models": {"popularity": model(0.02, 1, [0.02]), "ease": model(0.09, 1, [0.09]),
                       "graphsage_ui": model(0.05, 3, [0.03, 0.04, 0.05]),
                       "graphsage": model(0.07, 3, [0.05, 0.06, 0.07])},
            "ranking": ["ease", "graphsage", "graphsage_ui", "popularity"],
            "graphsage_sampled": {"candidates": [1000], "command": "graphrec-dist evaluate --run x",
                                  "metrics": {"hit@10/C=1000": 0.4, "ndcg@10/C=1000": 0.2}},
            "ablation": {"run": False, "why": "--full only"}}


def _sections() -> dict:
    curve = [{"step": 0, "train_s": 0.0, "val_ndcg@10": 0.0, "val_ndcg@10_raw_table": 0.0},
             {"step": 10, "train_s": 5.0, "val_ndcg@10": 0.03, "val_ndcg@10_raw_table": 0.01}]
    point = {"users": 534, "percent": 1.0, "num_books": 1000, "train_edges": 40000, "graph_edges": 100000,
             "data_build": {"synth_s": 1.0, "build_s": 2.0, "wall_s": 4.0, "peak_rss_mb": 400.0},
             "training": {"steps": 5, "seed_edges_per_s": 5000.0, "peak_rss_mb": 600.0, "wall_s": 9.0},
             "evaluation": {"inference_s": 0.5, "ranking_s": 0.2, "peak_rss_mb": 500.0, "wall_s": 3.0}}
    return {
        "quality": _quality_results(),
        "training": {"profile": {"users": 53424, "steps": 20, "seed_edges_per_s": 3000.0, "command": "profile",
                                 "sampling_s": 4.0, "forward_s": 2.0, "backward_s": 3.0, "optimizer_s": 1.0},
                     "compare": {"users": 2000, "trainer": {"command": "graphrec-dist train configs/demo.yaml",
                                                            "curve": [{"epoch": 1, "step": 50, "train_s": 4.0,
                                                                       "val_ndcg@10": 0.05}]},
                                 "reference": {"steps": 10, "steps_per_epoch": 1, "train_s": 5.0,
                                               "seed_users_per_s": 4000.0,
                                               "fallback_share_pos": 0.01, "fallback_share_neg": 0.03, "curve": curve},
                                 "race": race(curve, [{"step": 50, "train_s": 4.0, "val_ndcg@10": 0.05}])}},
        "evaluation": {"versus_bare": {"evaluator_s": 1.2, "bare_topk_s": 1.0, "ratio": 1.2, "target_ratio": 1.5,
                                       "args": {"num_users": 53424, "num_books": 10000, "dim": 64}},
                       "graphsage_inference": {"inference_s": 0.3, "ranking_s": 0.1, "num_users": 2000,
                                               "num_books": 3991}},
        "sampling": {"num_users": 53424, "train_edges": 4860481, "batch_size": 2048, "num_neighbors": [15, 10],
                     "neg_per_pos": 1, "repeats": 3,
                     "rows": [{"backend": "pyg-lib", "installed": False},
                              {"backend": "torch-sparse", "installed": True, "version": "0.6.18", "num_workers": 0,
                               "batches": 10, "startup_s": 0.5, "seconds_per_batch": 0.4, "seed_edges_per_s": 5000.0},
                              {"backend": "torch-sparse", "installed": True, "version": "0.6.18", "num_workers": 2,
                               "batches": 10, "startup_s": 0.9, "seconds_per_batch": 0.3, "seed_edges_per_s": 6800.0}]},
        "scaling": {"users": 2000, "steps": 30, "rows": [
            {"processes": 1, "command": "torchrun a", "seed_edges_per_s": 3000.0, "speedup": 1.0,
             "peak_rss_mb": 800.0},
            {"processes": 2, "command": "torchrun b", "seed_edges_per_s": 3300.0, "speedup": 1.1,
             "peak_rss_mb": 700.0}]},
        "memory": {**point, "users": 53424, "training_under_target": True},
        "sweep": {"points": [point, {**point, "users": 1603, "percent": 3.0}]},
        "sharding": {"users": 5342, "steps": 4, "preset": "configs/demo.yaml",
                     "build": {"partitions": 2, "peak_rss_gib": 0.45, "wall_s": 20.0, "peak_vs_in_memory": 0.5,
                               "in_memory": {"peak_rss_gib": 0.9, "wall_s": 25.0}},
                     "rows": [{"run": "replicated", "ranks": 1, "peak_rss_gib": 1.2, "s_per_step": 0.3,
                               "allreduce_mb_per_step": None, "allreduce_s_per_step": None,
                               "val_ndcg@10": 0.001, "test_ndcg@10": 0.001},
                              {"run": "sharded-w2", "ranks": 2, "peak_rss_gib": 0.8, "s_per_step": 0.2,
                               "allreduce_mb_per_step": 9.03, "allreduce_s_per_step": 0.05,
                               "val_ndcg@10": 0.001, "test_ndcg@10": 0.001}]},
    }


def test_report_draws_every_figure_and_names_the_commands(tmp_path):
    out, docs = tmp_path / "bench_out", tmp_path / "docs"
    for name, results in _sections().items():
        common.write_section(out, _payload(name, results))
    path = report.generate(out, docs)
    text = path.read_text()
    for name in report.SECTION_NAMES:
        assert f"`graphrec-dist bench --sections {name}`" in text
    assert "graphsage is NOT the best model" in text and "ease leads" in text
    assert "1.20×" in text  # the evaluator ratio
    assert "| sharded-w2 | 2 | 0.8 | 0.2 | 9.03 | 0.05 |" in text
    assert "streamed: peak 0.45 GiB, 20 s; in memory" in text and "streamed peak 0.50× in memory" in text
    pngs = sorted(p.name for p in (docs / "img").glob("*.png"))
    assert pngs == ["evaluation.png", "quality_bars.png", "sampling.png", "scaling.png", "sweep.png",
                    "time_to_quality.png", "training_curves.png", "training_phases.png", "training_race.png"]
    for p in (docs / "img").glob("*.png"):
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000
        assert f"img/{p.name}" in text


def test_a_best_last_epoch_is_not_a_budget_limit_when_the_lr_schedule_ended(tmp_path):
    out, docs = tmp_path / "bench_out", tmp_path / "docs"
    res = _quality_results()
    common.write_section(out, _payload("quality", res))
    text = report.generate(out, docs).read_text()
    assert "it was still improving" in text and "Still improving when the budget ran out" in text
    res["models"]["graphsage"]["lr_decayed"] = res["models"]["graphsage_ui"]["lr_decayed"] = True
    common.write_section(out, _payload("quality", res))
    text = report.generate(out, docs).read_text()
    assert "schedule reaches zero" in text and "it was still improving" not in text
    limited = [line for line in text.splitlines() if line.startswith("Still improving when the budget ran out")]
    assert limited and "graphsage" not in limited[0]


def test_report_says_which_sections_were_not_run(tmp_path):
    out, docs = tmp_path / "bench_out", tmp_path / "docs"
    common.write_section(out, _payload("quality", {**_quality_results(),
                                                   "ranking": ["graphsage", "ease", "graphsage_ui", "popularity"]}))
    text = report.generate(out, docs).read_text()
    assert "graphsage on Graph3 is the best model" in text
    assert text.count("Not run into this bench folder") == len(report.SECTION_NAMES) - 1
    payload = json.loads((out / "quality.json").read_text())
    assert payload["machine"]["cpu_model"] and payload["section"] == "quality"


def test_the_report_keeps_each_sections_json_and_draws_from_the_newer_copy(tmp_path):
    docs = tmp_path / "docs"
    sections = _sections()
    first, second = tmp_path / "first", tmp_path / "second"
    common.write_section(first, {**_payload("quality", sections["quality"]), "finished_at": "2026-01-01T00:00:00"})
    report.generate(first, docs)
    assert json.loads((docs / "bench" / "quality.json").read_text())["finished_at"] == "2026-01-01T00:00:00"
    # A later bench of another section into another folder: quality is drawn from the kept copy.
    common.write_section(second, {**_payload("sharding", sections["sharding"]), "finished_at": "2026-01-02T00:00:00"})
    text = report.generate(second, docs).read_text()
    assert "| sharded-w2 | 2 | 0.8 | 0.2 | 9.03 | 0.05 |" in text and "img/quality_bars.png" in text
    assert text.count("Not run into this bench folder") == len(report.SECTION_NAMES) - 2
    assert sorted(p.name for p in (docs / "bench").glob("*.json")) == ["quality.json", "sharding.json"]
    # An older copy in the bench folder does not replace a newer kept one.
    old = {**_payload("quality", {**sections["quality"], "ranking": ["ease", "graphsage"]}),
           "finished_at": "2025-12-31T00:00:00"}
    common.write_section(second, old)
    report.generate(second, docs)
    assert json.loads((docs / "bench" / "quality.json").read_text())["finished_at"] == "2026-01-01T00:00:00"


def test_ablation_trains_graphsage_without_each_relation_and_reports_the_change(tmp_path, monkeypatch):
    from graphrec_dist.benchmarks import quality

    calls = []
    worse = {"tag": 0.05, "author": 0.06, "language": 0.07, "year_bin": 0.071, "similar": 0.065}

    def fake_train_run(root, name, preset, overrides, **kw):
        calls.append(overrides)
        excluded = [o.split("=[")[1].rstrip("]") for o in overrides if o.startswith("model.exclude_relations=")]
        ndcg = worse[excluded[0]]
        return {"epochs": [{"epoch": 0, "val_ndcg@10": ndcg, "epoch_time_s": 2.0}], "command": name,
                "run_dir": str(tmp_path / name), "wall_s": 3.0, "peak_rss_mb": 100.0, "reused": False,
                "test_metrics": {"ndcg@10": ndcg, "hit@10": 2 * ndcg, "best_epoch": 0}}

    monkeypatch.setattr(quality, "train_run", fake_train_run)
    off = quality.run_ablation(BenchPlan(mode="reduced", out_dir=tmp_path), ["train.seed=0"], 0.07)
    assert off["run"] is False and not calls
    ab = quality.run_ablation(BenchPlan(mode="reduced", out_dir=tmp_path, ablation=True), ["train.seed=0"], 0.07)
    assert list(ab["results"]) == ["tag", "author", "language", "year_bin", "similar"]
    assert ab["baseline_ndcg@10"] == 0.07 and ab["results"]["tag"]["delta_ndcg@10"] == pytest.approx(-0.02)
    assert ab["results"]["year_bin"]["delta_ndcg@10"] == pytest.approx(0.001)
    assert all("train.seed=0" in c for c in calls)
    out, docs = tmp_path / "bench_out", tmp_path / "docs"
    common.write_section(out, _payload("quality", {**_quality_results(), "ablation": ab}))
    text = report.generate(out, docs).read_text()
    assert "### Relation ablation" in text and "| tag | 0.1000 | 0.0500 | -0.0200 |" in text
    # noise bound sqrt(0.07 / 2000) = 0.0059; a difference of two runs counts beyond 2·√2 x that = 0.0167
    assert "removing tag (-0.0200) changed test NDCG@10 by more than 0.0167" in text
    assert "author (-0.0100), language (+0.0000), year_bin (+0.0010), similar (-0.0050) stayed within it" in text
    rows = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ") and "exclude_relations" in line]
    assert rows == ["| tag", "| author", "| language", "| year_bin", "| similar"]


def test_quality_models_option_trains_only_those_and_carries_the_other_rows(tmp_path, monkeypatch):
    from graphrec_dist.benchmarks import quality

    calls, ndcg = [], {"popularity": 0.01, "graphsage": 0.03}

    def fake_train_run(root, name, preset, overrides, **kw):
        model = next((o.split("=")[1] for o in overrides if o.startswith("model.name=")), "popularity")
        calls.append(model)
        return {"epochs": [{"epoch": 0, "val_ndcg@10": ndcg[model], "epoch_time_s": 2.0}], "command": name,
                "run_dir": str(tmp_path / name), "wall_s": 3.0, "peak_rss_mb": 100.0, "reused": False,
                "test_metrics": {"ndcg@10": ndcg[model], "hit@10": 2 * ndcg[model], "best_epoch": 0}}

    monkeypatch.setattr(quality, "train_run", fake_train_run)
    monkeypatch.setattr(quality, "ensure_bundle",
                        lambda plan, users: {"num_users": users, "num_books": 5000, "train_edges": 10})
    monkeypatch.setattr(quality, "evaluate_run", lambda *a, **k: {"ndcg@10": 0.2})
    plan = BenchPlan(mode="reduced", out_dir=tmp_path, quality_models=["popularity", "graphsage"])
    common.write_section(tmp_path, _payload("quality", quality.run_section(plan)))
    calls.clear()
    ndcg["popularity"] = 0.05
    res = quality.run_section(dataclasses.replace(plan, quality_models=["popularity"], carry_over=True))
    assert calls == ["popularity"] and res["ranking"] == ["popularity", "graphsage"]
    assert res["models"]["graphsage"]["measured_at"] and res["graphsage_sampled"]["ndcg@10"] == 0.2
    # another size is other data: nothing to carry
    other = quality.run_section(dataclasses.replace(plan, quality_models=["popularity"], carry_over=True,
                                                    quality_users=1000))
    assert list(other["models"]) == ["popularity"] and "graphsage_sampled" not in other


# ----- the whole command at a tiny size -----

def _tiny_plan(out_dir: Path) -> BenchPlan:
    return BenchPlan(
        mode="reduced", out_dir=out_dir, repeats=1, sampling_users=TINY_USERS, sampling_workers=[0], sampling_batches=2,
        profile_users=TINY_USERS, profile_steps=3, compare_users=TINY_USERS, compare_budget_s=5, compare_eval_every=2,
        eval_users=200, eval_books=100, scaling_users=TINY_USERS, scaling_steps=2, memory_users=TINY_USERS,
        sweep_users=[TINY_USERS], sweep_steps=3, quality_users=TINY_USERS, quality_models=["popularity", "graphsage"],
        sampled_candidates=[100, 200])


TINY_SET = ["--set", "train.epochs=2", "--set", "train.batch_size=256", "--set", "train.num_neighbors=[5,5]",
            "--set", "model.num_layers=2", "--set", "model.emb_dim=8", "--set", "model.hidden_dim=8",
            "--set", "train.edges_per_epoch=1024"]


@pytest.mark.slow
def test_bench_command_end_to_end_at_a_tiny_size(tmp_path, monkeypatch):
    from graphrec_dist.benchmarks import cli as bench_cli

    monkeypatch.setattr(bench_cli, "reduced_plan", _tiny_plan)
    out, docs = tmp_path / "bench_out", tmp_path / "docs"
    result = bench_cli.main(["--out", str(out), "--docs", str(docs), "--sections", "quality,training,evaluation,memory",
                             *TINY_SET])
    assert set(result.written) == {"quality", "training", "evaluation", "memory"} and not result.failed
    quality = json.loads((out / "quality.json").read_text())
    assert quality["command"].startswith("graphrec-dist bench --sections quality,training,evaluation,memory --set")
    assert quality["command"].endswith(f" --out {out}")  # where its runs and JSON live
    models = quality["results"]["models"]
    assert set(models) == {"popularity", "graphsage"}
    for m in models.values():
        # the figures are the trainer's own, read back from the run it names
        saved = json.loads((Path(m["run_dir"]) / "test_metrics.json").read_text())
        assert m["test"]["ndcg@10"] == saved["ndcg@10"] and m["test"]["hit@10"] == saved["hit@10"]
        assert 1 <= m["best_val_epoch"] <= m["epochs_run"] == len(m["curve"])
        assert Path(m["config"]).is_file()
    sampled = quality["results"]["graphsage_sampled"]["metrics"]
    assert 0.0 <= sampled["ndcg@10/C=100"] <= 1.0
    evaluation = json.loads((out / "evaluation.json").read_text())["results"]
    assert _finite_positive(evaluation["versus_bare"]["ratio"])
    assert _finite_positive(evaluation["graphsage_inference"]["inference_s"])
    training = json.loads((out / "training.json").read_text())["results"]
    for phase in ("sampling_s", "forward_s", "backward_s", "optimizer_s", "seed_edges_per_s"):
        assert _finite_positive(training["profile"][phase])
    assert training["compare"]["reference"]["steps"] > 0 and training["compare"]["trainer"]["curve"]
    memory = json.loads((out / "memory.json").read_text())["results"]
    for stage in ("data_build", "training", "evaluation"):
        assert _finite_positive(memory[stage]["peak_rss_mb"])
    assert memory["training_under_target"] is True
    text = result.report.read_text()
    assert "## Quality (300 users" in text and "Not run into this bench folder" in text
    for png in ("quality_bars.png", "training_curves.png", "training_race.png", "training_phases.png"):
        assert (docs / "img" / png).read_bytes()[:8] == PNG_MAGIC


def test_section_time_names_reused_runs_and_their_own_cost():
    from graphrec_dist.benchmarks.report_text import _section_time

    res = {"section_wall_s": 4.0,
           "models": {"a": {"reused": True, "wall_s": 100.0}, "b": {"reused": False, "wall_s": 5.0}},
           "ablation": {"results": {"tag": {"reused": True, "wall_s": 50.0}}}}
    assert _section_time(res) == "4 s (2 runs reused from an earlier invocation, which took 150 s)"
    assert _section_time({"section_wall_s": 7.0}) == "7 s"


def test_run_names_follow_the_config_so_other_settings_never_share_a_folder():
    from graphrec_dist.benchmarks.quality import run_name

    a = run_name("graphsage", 2000, "configs/demo.yaml", ["train.seed=0", "train.epochs=5"])
    assert a == run_name("graphsage", 2000, "configs/demo.yaml", ["train.seed=0", "train.epochs=5"])
    assert a.startswith("graphsage-2000-")
    assert a != run_name("graphsage", 2000, "configs/demo.yaml", ["train.seed=0"])
    assert a != run_name("graphsage", 2000, "configs/debug.yaml", ["train.seed=0", "train.epochs=5"])


def test_an_edited_preset_gets_a_run_folder_of_its_own(tmp_path):
    from graphrec_dist.benchmarks.quality import run_name

    preset = tmp_path / "preset.yaml"
    preset.write_text("model:\n  emb_dim: 64\n")
    before = run_name("graphsage", 2000, str(preset), ["train.seed=0"])
    assert before == run_name("graphsage", 2000, str(preset), ["train.seed=0"])
    preset.write_text("model:\n  emb_dim: 128\n")
    assert before != run_name("graphsage", 2000, str(preset), ["train.seed=0"])


def test_same_graph_comparison_locates_the_gap_only_when_the_numbers_say_so():
    from graphrec_dist.benchmarks.report_quality import same_graph_comparison

    def models(**ndcg):
        return {k: {"test": {"ndcg@10": v}} for k, v in ndcg.items()}

    line = same_graph_comparison(models(graphsage=0.05, graphsage_ui=0.035, lightgcn=0.052, lightgcn_ui=0.05))[0]
    assert "(70%)" in line and "(96%)" in line and "add 43% to graphsage and 4% to lightgcn" in line
    assert "the gap is in the user–book" in line
    other = same_graph_comparison(models(graphsage=0.04, graphsage_ui=0.045, lightgcn=0.052, lightgcn_ui=0.05))[0]
    assert "the gap is in" not in other
    assert same_graph_comparison(models(graphsage=0.05, lightgcn=0.052)) == []


def test_realdata_runs_every_model_on_every_split_seed_and_reports_mean_and_std(tmp_path, monkeypatch):
    from graphrec_dist.benchmarks import realdata

    calls = []
    base = {"ease": 0.18, "graphsage": 0.17, "graphsage_ui": 0.15}

    def fake_train_run(root, name, preset, overrides, **kw):
        calls.append((preset, overrides))
        model = "ease" if "ease" in preset else next(o.split("=")[1] for o in overrides if o.startswith("model.name="))
        seed = int(next(o.split("=")[1] for o in overrides if o.startswith("data.split.seed=")))
        ndcg = base[model] + 0.01 * seed
        return {"epochs": [{"epoch": 0, "val_ndcg@10": ndcg - 0.005, "epoch_time_s": 2.0}], "command": name,
                "run_dir": str(tmp_path / name), "wall_s": 3.0, "peak_rss_mb": 100.0, "reused": False,
                "test_metrics": {"ndcg@10": ndcg, "hit@10": 2 * ndcg, "ndcg@20": ndcg, "mrr": ndcg, "best_epoch": 0}}

    tunes = []

    def fake_tune_run(root, name, preset, overrides, **kw):
        tunes.append((name, overrides))
        lam = 30 if "data.split.seed=1" in overrides else 100
        return {"grid": {"model.ease_lambda": [30, 100]}, "chosen": {"model.ease_lambda": lam},
                "chosen_overrides": [f"model.ease_lambda={lam}"], "best_val": 0.2, "points": [{}, {}],
                "command": f"graphrec-dist tune {preset}"}

    monkeypatch.setattr(realdata, "train_run", fake_train_run)
    monkeypatch.setattr("graphrec_dist.benchmarks.tuning.tune_run", fake_tune_run)
    monkeypatch.setattr(realdata, "popularity_breakdown",
                        lambda run_dir: [{"train_count": [1, 9], "rows": 5, "ndcg@10": 0.1},
                                         {"train_count": [10, 99], "rows": 5, "ndcg@10": 0.3}])
    raw = tmp_path / "ml"
    plan = BenchPlan(mode="reduced", out_dir=tmp_path / "bench_out", real_data_dir=str(raw), real_seeds=[0, 1, 2],
                     quality_models=["ease", "graphsage_ui", "graphsage"])
    skipped = realdata.run_section(plan)
    assert "real data not found" in skipped["skipped"] and not calls
    common.write_section(tmp_path / "skip", _payload("realdata", skipped))
    assert "Not run: real data not found" in report.generate(tmp_path / "skip", tmp_path / "docs").read_text()
    raw.mkdir()
    res = realdata.run_section(plan)
    assert len(calls) == 9 and res["ranking"] == ["ease", "graphsage", "graphsage_ui"]
    # EASE, a closed form, is tuned on each split and trains with that split's choice; graphsage is not tuned
    assert sorted(name for name, _ in tunes) == ["real-ease-split0", "real-ease-split1", "real-ease-split2"]
    ease_runs = sorted((o for _, ov in calls for o in ov if o.startswith(("model.ease_lambda", "data.split.seed"))))
    assert ease_runs.count("model.ease_lambda=100") == 2 and ease_runs.count("model.ease_lambda=30") == 1
    seeds_seen = sorted({o for _, ov in calls for o in ov if o.startswith("data.split.seed=")})
    assert seeds_seen == ["data.split.seed=0", "data.split.seed=1", "data.split.seed=2"]
    assert all(f"data.raw_dir={raw}" in ov and "data.source=csv" in ov for _, ov in calls)
    # each seed has its own bundle folder (the split is part of the bundle)
    assert len({o for _, ov in calls for o in ov if o.startswith("data.bundle_dir=")}) == 3
    s = res["models"]["graphsage"]["summary"]
    assert s["test_ndcg@10"]["mean"] == pytest.approx(0.18) and s["test_ndcg@10"]["std"] == pytest.approx(0.01)
    assert s["val_ndcg@10"]["mean"] == pytest.approx(0.175)
    # --jobs 3: the same runs, three at once, the same table
    calls.clear()
    parallel = realdata.run_section(dataclasses.replace(plan, quality_jobs=3))
    assert len(calls) == 9 and parallel["models"] == res["models"]
    out, docs = tmp_path / "bench_out", tmp_path / "docs"
    common.write_section(out, _payload("realdata", res))
    text = report.generate(out, docs).read_text()
    assert "| ease | ease_lambda 100/30/100 | 0.1850 ± 0.0100 | **0.1900 ± 0.0100** |" in text
    assert "| graphsage | shipped preset (not tuned per dataset) |" in text
    assert "- ease: ease_lambda ∈ {30, 100} (on each split's validation)" in text
    assert "graphsage trails the best baseline, ease (0.1800 vs 0.1900 test NDCG@10, 95%)" in text
    assert "| model | 1–9 | 10–99 |" in text and "| ease | 0.1000 ± 0.0000 | 0.3000 ± 0.0000 |" in text

    # --models graphsage: only graphsage trains; the other rows come from the JSON just written
    calls.clear()
    base["graphsage"] = 0.2
    again = dataclasses.replace(plan, quality_models=["graphsage"], carry_over=True)
    res2 = realdata.run_section(again)
    assert len(calls) == 3 and {preset for preset, _ in calls} == {"configs/demo.yaml"}
    assert res2["ranking"] == ["graphsage", "ease", "graphsage_ui"]
    assert res2["models"]["ease"]["measured_at"] and "measured_at" not in res2["models"]["graphsage"]
    assert res2["models"]["ease"]["summary"] == res["models"]["ease"]["summary"]
    common.write_section(out, _payload("realdata", res2))
    text = report.generate(out, docs).read_text()
    assert "| ease † | ease_lambda 100/30/100 | 0.1850 ± 0.0100 | 0.1900 ± 0.0100 |" in text
    assert "| graphsage | " in text
    assert "trained only the unmarked models" in text
    # other split seeds are other data: nothing is carried over
    other = realdata.run_section(dataclasses.replace(again, real_seeds=[0, 1]))
    assert list(other["models"]) == ["graphsage"]


def test_inductive_section_runs_each_model_per_dataset_and_seed_and_reports_the_targets(tmp_path, monkeypatch):
    from graphrec_dist.benchmarks import inductive

    calls = []
    cold = {"graphsage": 0.15, "content_knn": 0.10, "ease": 0.0, "popularity": 0.07, "ease_content": 0.12}

    def fake_train_run(root, name, preset, overrides, **kw):
        calls.append(overrides)
        model = next((o.split("=")[1] for o in overrides if o.startswith("model.name=")), Path(preset).stem)
        plain = "model.id_dropout=0" in overrides
        run_dir = tmp_path / name
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics = {"cold_val": {"ndcg@10": cold[model] - (0.05 if plain else 0)},
                   "cold_test": {"ndcg@10": cold[model] - (0.05 if plain else 0)}}
        if model != "content_knn":
            metrics.update(cold_user_val={"ndcg@10": 0.2},
                           cold_user_test={"ndcg@10": 0.18 if model == "ease" else 0.15})
        (run_dir / "inductive_metrics.json").write_text(json.dumps({"model": model, **metrics}))
        warm = 0.16 if plain else 0.158
        return {"epochs": [{"epoch": 0, "val_ndcg@10": warm}], "command": name, "run_dir": str(run_dir),
                "wall_s": 3.0, "test_metrics": {"ndcg@10": warm}}

    tunes = []

    def fake_tune_run(root, name, preset, overrides, **kw):
        tunes.append(overrides)
        return {"grid": {"model.ease_lambda": [30, 100]}, "chosen": {"model.ease_lambda": 30},
                "chosen_overrides": ["model.ease_lambda=30"], "best_val": 0.2, "points": [{}, {}], "command": ""}

    monkeypatch.setattr(inductive, "train_run", fake_train_run)
    monkeypatch.setattr("graphrec_dist.benchmarks.tuning.tune_run", fake_tune_run)
    monkeypatch.setattr(inductive, "time_history_recommend", lambda plan, users: {
        "median_s": 0.2, "max_s": 0.3, "repeats": 5, "num_users": users, "num_books": 100,
        "preset": "configs/demo.yaml"})
    plan = BenchPlan(mode="reduced", out_dir=tmp_path / "bench_out", real_data_dir=str(tmp_path / "missing"),
                     inductive_seeds=[0, 1])
    res = inductive.run_section(plan)
    assert "real data not found" in res["datasets"]["real"]["skipped"]
    assert len(calls) == 6 * 2  # graphsage twice (with and without id_dropout) and four baselines, 2 seeds
    assert all("data.split.cold_items=0.1" in ov and "data.split.cold_users=0.1" in ov for ov in calls)
    # ease and ease_content are tuned on each split of the same (cold-split) data, then run with the choice
    assert len(tunes) == 2 * 2 and all("data.split.cold_items=0.1" in ov for ov in tunes)
    assert sum("model.ease_lambda=30" in ov for ov in calls) == 2 * 2
    assert len({o for ov in calls for o in ov if o.startswith("data.bundle_dir=")}) == 2
    rows = res["datasets"]["synth"]["rows"]
    assert rows["graphsage"]["summary"]["cold_test"]["mean"] == pytest.approx(0.15)
    assert rows["content_knn"]["summary"]["cold_user_test"]["n"] == 0
    common.write_section(tmp_path / "bench_out", _payload("inductive", res))
    text = report.generate(tmp_path / "bench_out", tmp_path / "docs").read_text()
    assert "graphsage 0.1500 vs content_knn 0.1000 test NDCG@10 = **1.50×**" in text
    assert "New users: graphsage 0.1500 vs EASE 0.1800 test NDCG@10 (83% of EASE)" in text
    assert "graphsage 0.1500 vs ease_content 0.1200 test NDCG@10 = **1.25×**" in text
    assert "validation NDCG@10 0.1580 vs 0.1600 without it (-1.3%; allowed −2%)" in text
    table = text[text.index("| model | chosen on validation | warm val"):]
    assert table.index("| graphsage |") < table.index("| graphsage, id_dropout=0 |") < table.index("| content_knn |")
    assert "median 0.200 s" in text
    # With the real data there, the reduced plan leaves the generated data to --full.
    (tmp_path / "real").mkdir()
    calls.clear()
    res = inductive.run_section(dataclasses.replace(plan, real_data_dir=str(tmp_path / "real")))
    assert "runs with --full" in res["datasets"]["synth"]["skipped"] and "graphsage" in res["datasets"]["real"]["rows"]
    assert len(calls) == 6 * 2 and all(f"data.raw_dir={tmp_path / 'real'}" in ov for ov in calls)


def test_the_full_plan_holds_the_slow_parts_of_inductive_and_serving(tmp_path):
    from graphrec_dist.benchmarks.plan import full_plan, reduced_plan

    reduced, full = reduced_plan(tmp_path), full_plan(tmp_path)
    assert (reduced.inductive_seeds, reduced.inductive_synth, reduced.serving_synthetic_items) == ([0, 1], False,
                                                                                                  100_000)
    assert (full.inductive_seeds, full.inductive_synth, full.serving_synthetic_items) == ([0, 1, 2, 3, 4], True,
                                                                                         1_000_000)


def test_sampled_speed_report_names_the_ratio_and_the_per_step_phases(tmp_path):
    def row(rate, sampling):
        return {"sampling_s": sampling, "forward_s": 1.0, "backward_s": 2.0, "optimizer_s": 0.5, "total_s": 0.0,
                "seed_edges_per_s": rate}

    summary = {"plain_workers0": row(2000.0, 6.0), "plain_workers1": row(2500.0, 4.0),
               "trainer_blocks": row(5000.0, 1.0), "trainer_pyg": row(2200.0, 6.0)}
    res = {"summary": summary, "runs": {k: [v] * 3 for k, v in summary.items()}, "best_plain": "plain_workers1",
           "ratio_blocks_vs_best_plain": 2.0, "ratio_pyg_vs_best_plain": 0.88, "num_users": 100, "train_edges": 1000,
           "threads": 2, "steps": 10,
           "sizes": {"layers": 2, "fanout": [15, 10], "batch_size": 2048, "neg": 1, "dim": 64}}
    common.write_section(tmp_path / "out", _payload("sampled_speed", res))
    text = report.generate(tmp_path / "out", tmp_path / "docs").read_text()
    assert "runs at **2.00×** the best plain pipeline" in text and "ran at 0.88×" in text
    # 10 steps: 1.0 s of sampling in total is 100 ms a step; rows sorted fastest first.
    assert ("| graphrec_dist trainer, block sampler (`train.sampler=blocks`, default) | 5,000 | 2.00× | 100 | 100 "
            "| 200 | 50 |") in text
    table = text[text.index("| pipeline |"):]
    assert table.index("block sampler") < table.index("`num_workers=1`") < table.index("`num_workers=0`")


def test_serving_report_quotes_export_time_and_latency_per_client_count(tmp_path):
    res = {"users": 53424, "items": 10000, "preset": "configs/demo.yaml", "export_command": "graphrec-dist export x",
           "serve_command": "graphrec-dist serve x",
           "export": {"export_s": 41.5, "k": 100, "topk_rows": 5342400, "child_wall_s": 50.2,
                      "child_peak_rss_mb": 2048.0},
           "serve": {"load_s": 12.0, "runs": [
               {"clients": 1, "requests": 900, "errors": 0, "requests_per_s": 300.0, "p50_ms": 3.1, "p99_ms": 8.0},
               {"clients": 8, "requests": 900, "errors": 0, "requests_per_s": 290.0, "p50_ms": 25.0, "p99_ms": 40.0}]},
           "index": {"synthetic": {"items": 1000000, "queries": 1000, "dim": 64, "indexes": [
               {"index": "exact", "param": None, "value": None, "build_s": 0.0, "batch_queries_per_s": 120.0,
                "p50_ms": 30.0, "p99_ms": 45.0, "recall@10": 1.0, "recall@100": 1.0},
               {"index": "faiss", "param": "nprobe", "value": 64, "build_s": 140.5, "batch_queries_per_s": 2500.0,
                "p50_ms": 0.5, "p99_ms": 1.2, "recall@10": 0.991, "recall@100": 0.93}]}}}
    common.write_section(tmp_path / "out", _payload("serving", res))
    text = report.generate(tmp_path / "out", tmp_path / "docs").read_text()
    assert "top 100 per user (5,342,400 rows) plus embeddings: **41.5 s**" in text and "peak RSS 2.00 GiB" in text
    assert "| 8 | 290 | 25.00 | 40.00 | 0 |" in text and "| 1 | 300 | 3.10 | 8.00 | 0 |" in text
    assert "**1,000,000 items × 64 dims, 1,000 queries** (synthetic" in text
    assert "| faiss | nprobe=64 | 140.5 | 2,500 | 0.50 | 1.20 | 0.991 | 0.930 |" in text


def test_run_key_is_the_resolved_config(tmp_path: Path) -> None:
    # A preset edit that the overrides replace keeps the key (the run is reused); one that changes
    # what is trained, or another launcher, does not.
    from graphrec_dist.benchmarks.runs import _key

    preset = tmp_path / "p.yaml"
    preset.write_text("data:\n  synth_users: 500\nmodel:\n  name: mf\n")
    overrides = ["data.synth_users=2000", "run.out_dir=/elsewhere"]
    key = _key(preset, overrides, "torchrun=0")
    preset.write_text("data:\n  synth_users: 700\nmodel:\n  name: mf\nrun:\n  progress: false\n")
    assert _key(preset, overrides, "torchrun=0") == key
    assert _key(preset, overrides + ["train.lr=0.5"], "torchrun=0") != key
    assert _key(preset, overrides, "torchrun=2") != key


def test_a_run_made_before_an_option_existed_is_reused_while_the_option_is_at_its_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The stamp's key hashes every option, so a new option changes it; the run's own config.yaml,
    # read with today's defaults, still says it trained the same thing. A changed value retrains.
    import yaml

    from graphrec_dist.benchmarks import runs
    from graphrec_dist.config import load_config

    overrides = ["model.name=mf", "data.synth_users=300"]
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "test_metrics.json").write_text(json.dumps({"ndcg@10": 0.05}))
    record = {"name": "r", "command": "graphrec-dist train model.name=mf", "run_dir": str(run_dir), "wall_s": 1.0}
    (run_dir / "bench_key.json").write_text(json.dumps({"key": "made-before", "invocation": "old", "record": record}))
    trained = []

    class Retrained(Exception):
        pass

    def run_child(cmd: list[str], *args: object, **kwargs: object) -> None:
        trained.append(cmd)
        raise Retrained

    monkeypatch.setattr(runs, "run_child", run_child)

    def save(**changes: object) -> None:
        saved = load_config(None, overrides).to_dict()
        del saved["model"]["path"]["edge_lr"]  # the run predates this option
        for dotted, value in changes.items():
            section, key = dotted.split("__")
            saved[section][key] = value
        (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))

    save()
    got = runs.train_run(tmp_path, "r", None, overrides, 60, "new", reuse=True)
    assert got["reused"] and got["test_metrics"] == {"ndcg@10": 0.05} and not trained
    with pytest.raises(Retrained):  # without --reuse another invocation's run is not taken
        runs.train_run(tmp_path, "r", None, overrides, 60, "new", reuse=False)
    assert len(trained) == 1
    for changed in ({"train__lr": 0.5}, {"model__no_such_option": 1}):
        trained.clear()
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "test_metrics.json").write_text(json.dumps({"ndcg@10": 0.05}))
        (run_dir / "bench_key.json").write_text(json.dumps({"key": "made-before", "invocation": "old",
                                                            "record": record}))
        save(**changed)
        with pytest.raises(Retrained):
            runs.train_run(tmp_path, "r", None, overrides, 60, "new", reuse=True)
        assert len(trained) == 1, changed
