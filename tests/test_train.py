import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from graphrec_dist.checkpoint import load_checkpoint
from graphrec_dist.cli import main as cli_main
from graphrec_dist.config import load_config
from graphrec_dist.data.store import load_bundle
from graphrec_dist.distributed import DistContext
from graphrec_dist.errors import ConfigError
from graphrec_dist.models.base import TripletBatch
from graphrec_dist.run_dir import new_model
from graphrec_dist.train import TrainHooks, main, profile_steps, run_training
from graphrec_dist.trainer import Trainer, batch_loss

OUTPUTS = ["config.yaml", "metrics.jsonl", "best.pt", "last.pt", "test_metrics.json", "training_curves.png"]
CHECKPOINT_KEYS = {"model", "config", "trainer", "world_size", "bundle_hash", "optimizer", "scheduler", "rng",
                   "loss_sums"}


@pytest.fixture(scope="module")
def data_overrides(tmp_path_factory) -> list[str]:
    """A tiny Goodbooks-shaped synth dataset, generated and built once for this module."""
    root = tmp_path_factory.mktemp("train_data")
    return [f"data.raw_dir={root}/raw", f"data.bundle_dir={root}/bundle", "data.synth_users=120"]


def small(data: list[str], out: Path, *extra: str) -> list[str]:
    return data + [f"run.out_dir={out}", "run.progress=false", "model.emb_dim=16", "model.hidden_dim=16",
                   "train.batch_size=128", "train.num_neighbors=[4,3]", "train.edges_per_epoch=1024",
                   "train.epochs=2", "train.lr=0.01", "eval.ks=[10]", "train.num_threads=1", *extra]


def read_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_graphsage_run_writes_every_output_and_the_loss_falls(data_overrides, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    result = main(["configs/debug.yaml", *small(data_overrides, out, "train.epochs=3")])
    assert [p for p in OUTPUTS if not (out / p).is_file()] == []
    rows = read_rows(out)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert all(r["seed_edges"] == 1024 and r["edges_per_s"] > 0 and "val_ndcg@10" in r for r in rows)
    test = json.loads((out / "test_metrics.json").read_text())
    assert test["num_users"] == 120 and 0.0 <= test["ndcg@10"] <= 1.0 and test == {**result.test_metrics, **{
        k: test[k] for k in ("model", "best_epoch", "split")}}
    assert (out / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "full-ranking test metrics" in printed and str(out) in printed


@pytest.mark.parametrize("sampler", ["blocks", "pyg"])
def test_resumed_run_ends_with_the_same_metrics_as_an_uninterrupted_one(data_overrides, tmp_path: Path,
                                                                        sampler: str) -> None:
    base = ["train.checkpoint_every=3", "model.dropout=0.2", f"train.sampler={sampler}"]
    full = main(["configs/debug.yaml", *small(data_overrides, tmp_path / "a", *base)])
    # 8 steps per epoch: the last checkpoint before step 11 is mid-epoch 1 (step 9).
    with pytest.raises(RuntimeError, match="simulated failure"):
        main(["configs/debug.yaml", *small(data_overrides, tmp_path / "b", *base, "debug.fail_after_step=11")])
    assert len(read_rows(tmp_path / "b")) == 1
    resumed = main(["configs/debug.yaml", *small(data_overrides, tmp_path / "b", *base)])
    assert resumed.test_metrics == full.test_metrics
    rows_a, rows_b = read_rows(tmp_path / "a"), read_rows(tmp_path / "b")
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    assert [r["val_ndcg@10"] for r in rows_a] == [r["val_ndcg@10"] for r in rows_b]


def test_pyg_loader_workers_resume_exactly_from_the_end_of_an_epoch(data_overrides, tmp_path: Path) -> None:
    base = ["train.sampler=pyg", "train.num_workers=1", "model.dropout=0.2"]
    full = main(["configs/debug.yaml", *small(data_overrides, tmp_path / "a", *base)])
    # 8 steps per epoch: stop after epoch 0, then resume with the workers starting epoch 1.
    main(["configs/debug.yaml", *small(data_overrides, tmp_path / "b", *base, "train.max_steps=8")])
    assert load_checkpoint(tmp_path / "b" / "last.pt")["trainer"]["step_in_epoch"] == 0
    resumed = main(["configs/debug.yaml", *small(data_overrides, tmp_path / "b", *base)])
    assert resumed.test_metrics == full.test_metrics
    assert [r["loss"] for r in read_rows(tmp_path / "a")] == [r["loss"] for r in read_rows(tmp_path / "b")]


def test_pyg_loader_workers_refuse_a_mid_epoch_checkpoint(data_overrides, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    base = ["train.sampler=pyg", "train.num_workers=1", "train.checkpoint_every=3"]
    with pytest.raises(RuntimeError, match="simulated failure"):
        main(["configs/debug.yaml", *small(data_overrides, out, *base, "debug.fail_after_step=5")])
    assert load_checkpoint(out / "last.pt")["trainer"]["step_in_epoch"] == 3
    err = _resume_exits_2(out, small(data_overrides, out, *base), capsys)
    assert f"train.resume: {out / 'last.pt'} was saved mid-epoch (epoch 0, step 3)" in err
    assert "train.num_workers=1 then, 1 now" in err and "cannot resume mid-epoch exactly" in err
    # Saved without workers, resumed with them: refused too, naming the way that is exact.
    shutil.rmtree(out)
    with pytest.raises(RuntimeError, match="simulated failure"):
        main(["configs/debug.yaml", *small(data_overrides, out, *base, "train.num_workers=0",
                                           "debug.fail_after_step=5")])
    err = _resume_exits_2(out, small(data_overrides, out, *base), capsys)
    assert "train.num_workers=0 then, 1 now" in err and "resume with train.num_workers=0 as it was saved" in err


def test_same_seed_same_result_other_seed_other_result(data_overrides, tmp_path: Path) -> None:
    runs = [main(["configs/debug.yaml", *small(data_overrides, tmp_path / name, "train.epochs=1", f"train.seed={s}")])
            for name, s in (("s0", 0), ("s0b", 0), ("s1", 1))]
    assert runs[0].history[0]["loss"] == runs[1].history[0]["loss"]
    assert runs[0].history[0]["loss"] != runs[2].history[0]["loss"]


def test_closed_form_model_goes_straight_to_evaluation(data_overrides, tmp_path: Path) -> None:
    cfg = load_config("configs/debug.yaml", small(data_overrides, tmp_path / "pop", "model.name=popularity"))
    result = run_training(cfg, DistContext())
    assert result.global_step == 0 and result.best_epoch == 0
    assert [p for p in OUTPUTS if not (tmp_path / "pop" / p).is_file()] == []
    assert set(load_checkpoint(tmp_path / "pop" / "last.pt")) == CHECKPOINT_KEYS  # the trainer's format


def test_triplet_model_trains_and_hooks_see_every_epoch(data_overrides, tmp_path: Path) -> None:
    seen = []
    cfg = load_config("configs/debug.yaml", small(data_overrides, tmp_path / "mf", "model.name=mf",
                                                   "train.max_steps=10"))
    result = run_training(cfg, DistContext(), TrainHooks(on_epoch_end=lambda row, path: seen.append((row, path))))
    assert result.global_step == 10  # max_steps stops inside the second epoch
    assert [r["epoch"] for r, _ in seen] == [0, 1] and seen[-1][1] == tmp_path / "mf" / "last.pt"
    assert set(load_checkpoint(tmp_path / "mf" / "last.pt")) == CHECKPOINT_KEYS


def test_time_budget_ends_training_after_the_epoch_that_spends_it(data_overrides, tmp_path: Path) -> None:
    # A budget shorter than one epoch: that epoch is the last, and it is validated although
    # eval.every would skip it, so the run has a best model.
    out = tmp_path / "budget"
    cfg = load_config("configs/debug.yaml", small(data_overrides, out, "model.name=mf", "train.epochs=5",
                                                   "eval.every=3", "train.time_budget_s=0.001"))
    result = run_training(cfg, DistContext())
    rows = read_rows(out)
    assert [r["epoch"] for r in rows] == [0] and "val_ndcg@10" in rows[0] and result.best_epoch == 0


def test_bad_config_key_exits_2_with_the_key_named(data_overrides, capsys) -> None:
    assert cli_main(["train", "configs/debug.yaml", "train.nope=1"]) == 2
    assert "train.nope" in capsys.readouterr().err


def test_profile_steps_reports_each_phase(data_overrides, tmp_path: Path) -> None:
    cfg = load_config("configs/debug.yaml", small(data_overrides, tmp_path / "prof"))
    prof = profile_steps(cfg, steps=10)  # more steps than one epoch of 8: rolls over
    assert prof["steps"] == 10 and prof["steps_per_epoch"] == 8
    assert all(prof[k] > 0 for k in ("sampling_s", "forward_s", "backward_s", "optimizer_s", "seed_edges_per_s"))
    # 10 steps of 128 seed edges each went through in total_s
    assert prof["seed_edges_per_s"] * prof["total_s"] == pytest.approx(1280, rel=0.01)


def test_profile_steps_books_each_interval_to_its_phase(data_overrides, tmp_path: Path, monkeypatch) -> None:
    from graphrec_dist import train

    # A clock that advances 0.5 s while a batch is fetched, 1 s in the forward pass, 2 s in the
    # backward pass, 0.25 s in the optimizer step and 100 s between steps (which is no phase).
    ticks = iter([0.5, 1.0, 2.0, 0.25, 100.0] * 10)
    now = [0.0]

    def perf_counter() -> float:
        value = now[0]
        now[0] += next(ticks)
        return value

    monkeypatch.setattr(train, "time", SimpleNamespace(perf_counter=perf_counter))
    # the pyg sampler: no sampling inside the forward pass, whose own clock this would not reach
    cfg = load_config("configs/debug.yaml", small(data_overrides, tmp_path / "prof", "train.sampler=pyg"))
    prof = profile_steps(cfg, steps=10)
    assert (prof["sampling_s"], prof["forward_s"], prof["backward_s"], prof["optimizer_s"]) == (5.0, 10.0, 20.0, 2.5)
    assert prof["total_s"] == 37.5
    assert prof["seed_edges_per_s"] == 34.1  # 1280 / 37.5
    assert prof["est_epoch_s"] == 30.0  # 8 steps of 3.75 s


def test_resume_refuses_a_checkpoint_of_another_model(data_overrides, tmp_path: Path) -> None:
    out = tmp_path / "run"
    main(["configs/debug.yaml", *small(data_overrides, out, "train.max_steps=2")])
    with pytest.raises(ConfigError, match="different 'model' config"):
        main(["configs/debug.yaml", *small(data_overrides, out, "model.hidden_dim=8")])
    fresh = main(["configs/debug.yaml", *small(data_overrides, out, "model.hidden_dim=8", "train.resume=never",
                                               "train.max_steps=2")])
    assert fresh.global_step == 2


def test_resume_takes_a_checkpoint_made_before_an_option_existed(data_overrides, tmp_path: Path) -> None:
    # The checkpoint's config lacks an option added since: it reads with the option's default,
    # which is the behaviour the run had. A key that no longer exists still refuses.
    out = tmp_path / "run"
    main(["configs/debug.yaml", *small(data_overrides, out, "train.max_steps=2")])
    last = out / "last.pt"
    state = torch.load(last, weights_only=False)
    del state["config"]["model"]["path"]["edge_lr"]
    torch.save(state, last)
    assert main(["configs/debug.yaml", *small(data_overrides, out, "train.max_steps=4")]).global_step == 4
    state = torch.load(last, weights_only=False)
    state["config"]["model"]["retired_option"] = 1
    torch.save(state, last)
    with pytest.raises(ConfigError, match="different 'model' config"):
        main(["configs/debug.yaml", *small(data_overrides, out, "train.max_steps=6")])


def test_full_graph_softmax_run_trains_without_a_neighbour_loader(data_overrides, tmp_path: Path) -> None:
    out = tmp_path / "full"
    result = main(["configs/debug.yaml", *small(data_overrides, out, "train.epochs=3", "train.mode=full_graph",
                                                "train.loss=softmax", "model.score=cosine",
                                                "model.temperature=0.2", "train.num_neighbors=[1]")])
    rows = read_rows(out)
    assert rows[-1]["loss"] < rows[0]["loss"]
    # the full softmax over every book starts near log(num_books) for an untrained cosine model
    books = load_bundle(Path(data_overrides[1].split("=", 1)[1])).num_books
    assert abs(rows[0]["loss"] - math.log(books)) < 0.5 * math.log(books)
    assert result.test_metrics["ndcg@10"] > 0


@pytest.fixture(scope="module")
def finished_run(data_overrides, tmp_path_factory) -> Path:
    """A 2-step graphsage run (last.pt, best.pt, config.yaml, ...) for the resume tests to copy."""
    out = tmp_path_factory.mktemp("finished") / "run"
    main(["configs/debug.yaml", *small(data_overrides, out, "train.max_steps=2")])
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _resume_exits_2(out: Path, overrides: list[str], capsys) -> str:
    """``graphrec-dist train`` resuming ``out``: exit 2, and not one byte of the run changed."""
    before = _files(out)
    assert cli_main(["train", "configs/debug.yaml", *overrides]) == 2
    assert _files(out) == before
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("graphrec-dist train: error: "), err
    return err


@pytest.mark.parametrize("name, keep", [("last.pt", 2 / 3), ("best.pt", 0.0)], ids=["truncated_last", "empty_best"])
def test_a_damaged_checkpoint_stops_the_resume_and_replaces_nothing(data_overrides, finished_run, tmp_path: Path,
                                                                    capsys, name: str, keep: float) -> None:
    out = Path(shutil.copytree(finished_run, tmp_path / "run"))
    whole = (out / name).read_bytes()
    (out / name).write_bytes(whole[:int(len(whole) * keep)])
    # More steps than the run has done: a resume that went on would rewrite last.pt and config.yaml.
    err = _resume_exits_2(out, small(data_overrides, out, "train.max_steps=4"), capsys)
    assert f"checkpoint {out / name} is truncated or garbled" in err and "train.resume=never" in err


def test_resume_refuses_a_checkpoint_of_other_data(data_overrides, finished_run, tmp_path: Path, capsys) -> None:
    out = Path(shutil.copytree(finished_run, tmp_path / "run"))
    # The same raw files under a stricter filter: another bundle with fewer books.
    other = [f"data.bundle_dir={tmp_path / 'other_bundle'}", "data.min_book_interactions=12"]
    err = _resume_exits_2(out, small(data_overrides, out, "train.max_steps=4", *other), capsys)
    assert f"train.resume: {out / 'last.pt'} does not fit this data" in err and "size mismatch" in err
    assert "train.resume=never" in err


def test_resume_refuses_other_data_with_the_same_node_counts(data_overrides, finished_run, tmp_path: Path,
                                                             capsys) -> None:
    out = Path(shutil.copytree(finished_run, tmp_path / "run"))
    # The same raw files split with another seed: the same users and books, other train edges.
    resplit = tmp_path / "resplit_bundle"
    err = _resume_exits_2(out, small(data_overrides, out, "train.max_steps=4", f"data.bundle_dir={resplit}",
                                     "data.split.seed=7"), capsys)
    ours, theirs = load_bundle(data_overrides[1].split("=", 1)[1]), load_bundle(resplit)
    assert (ours.num_users, ours.num_books) == (theirs.num_users, theirs.num_books)
    assert not ours.train.equal(theirs.train)
    saved = load_checkpoint(out / "last.pt")["bundle_hash"]
    assert saved == ours.content_hash() != theirs.content_hash()
    assert (f"train.resume: {out / 'last.pt'} was trained on bundle {ours.path} (content {saved}), but this run's "
            f"bundle {resplit} holds other data (content {theirs.content_hash()})") in err
    assert "train.resume=never" in err


# Every gradient-trained model with the options whose dtypes differ under autocast: full-graph
# graphsage as the demo trains it (cosine softmax, mask_seen, path term, item bias, id dropout),
# block- and PyG-sampled graphsage, LightGCN on the whole graph and user-book only, MF with mask_seen.
MASKED_SOFTMAX = ["train.loss=softmax", "train.softmax_per_user=true", "train.mask_seen=true"]
AMP_MODELS = {
    "graphsage_full_graph": ["train.mode=full_graph", *MASKED_SOFTMAX, "model.score=cosine", "model.temperature=0.2",
                             "model.item_bias=true", "model.id_dropout=0.1", "model.path.relations=[similar]",
                             "model.path.edge_weights=false", "train.num_neighbors=[1]"],
    "graphsage_blocks": ["train.sampler=blocks"],
    "graphsage_pyg": ["train.sampler=pyg"],
    "lightgcn": ["model.name=lightgcn", *MASKED_SOFTMAX],
    "lightgcn_ui": ["model.name=lightgcn_ui"],
    "mf_mask_seen": ["model.name=mf", *MASKED_SOFTMAX],
}


@pytest.mark.parametrize("model", sorted(AMP_MODELS))
def test_one_bf16_autocast_step_with_backward_for_every_model(data_overrides, tmp_path: Path, model: str) -> None:
    """debug.amp_on_cpu runs the autocast path a CUDA run takes: a step, its backward and the
    evaluation work in bf16, and the loss is the float32 run's to bf16 precision."""
    autocast_seen: list[bool] = []

    def watch(module: torch.nn.Module) -> None:  # records, at every submodule call, whether autocast is on
        for sub in module.modules():
            sub.register_forward_pre_hook(lambda *_: autocast_seen.append(torch.is_autocast_enabled("cpu")))

    losses = {}
    for amp in (False, True):
        overrides = small(data_overrides, tmp_path / f"amp_{amp}", *AMP_MODELS[model], "train.epochs=1",
                          "train.max_steps=2", f"debug.amp_on_cpu={str(amp).lower()}")
        cfg = load_config("configs/debug.yaml", overrides)
        result = run_training(cfg, DistContext(), TrainHooks(on_start=watch if amp else None))
        losses[amp] = result.history[0]["loss"]
        assert result.global_step == 2 and 0.0 <= result.test_metrics["ndcg@10"] <= 1.0
    assert any(autocast_seen)
    assert math.isfinite(losses[True]) and losses[True] == pytest.approx(losses[False], rel=0.05)


def test_resume_restores_the_rng_state_whatever_device_the_tensors_were_mapped_to(data_overrides,
                                                                                  tmp_path: Path) -> None:
    """A CUDA run resumes on its device; torch.set_rng_state takes CPU byte tensors only. CPU-only
    torch has no second device with storage, so the meta device stands in for CUDA as the process's
    device: the checkpoint must still come back onto the CPU, RNG state included."""
    out = tmp_path / "run"
    base = small(data_overrides, out, "train.checkpoint_every=3")
    with pytest.raises(RuntimeError, match="simulated failure"):
        main(["configs/debug.yaml", *base, "debug.fail_after_step=4"])
    saved = load_checkpoint(out / "last.pt")
    assert saved["trainer"]["step_in_epoch"] == 3  # a mid-epoch checkpoint: its RNG state is restored
    cfg = load_config("configs/debug.yaml", base)
    bundle = load_bundle(cfg.data.bundle_dir)
    model = new_model(cfg, bundle)
    trainer = Trainer(cfg, DistContext(device=torch.device("meta")), model, bundle, TrainHooks())
    torch.manual_seed(12345)  # a different RNG state, which the restore must replace
    trainer.restore(out / "last.pt")
    assert torch.equal(torch.get_rng_state(), saved["rng"][0]["torch"])
    assert all(torch.equal(v, saved["model"][k]) for k, v in model.state_dict().items())
    assert trainer.state.global_step == 3 and trainer.state.step_in_epoch == 3


def test_batch_loss_under_autocast_is_the_float32_loss(data_overrides) -> None:
    """batch_loss turns autocast off: the full softmax's logits are a float32 matmul, not bf16."""
    cfg = load_config("configs/debug.yaml", [*data_overrides, *MASKED_SOFTMAX])
    gen = torch.Generator().manual_seed(0)
    users, pos = torch.tensor([0, 1, 0, 2]), torch.tensor([3, 1, 4, 0])
    batch = TripletBatch(users, pos, torch.tensor([[2], [0], [1], [4]]))
    user, items = torch.randn(3, 8, generator=gen)[users], torch.randn(5, 8, generator=gen)
    outputs = ((user * items[pos]).sum(1), torch.randn(4, 1, generator=gen), torch.tensor(0.5), user, items,
               None, None, None)
    seen = (torch.tensor([0, 2, 3, 5]), torch.tensor([1, 2, 0, 3, 4]))
    want = batch_loss(cfg, outputs, batch, seen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = batch_loss(cfg, outputs, batch, seen)
    assert got.dtype == torch.float32 and torch.equal(got, want)
