"""The configuration schema: typed dataclasses, YAML presets and dotted command-line overrides.

A config is built from defaults, then a YAML preset, then ``section.key=value`` overrides, in that
order. Every value is checked against the dataclass field's type annotation; an unknown key, a
wrong type or an invalid value raises :class:`ConfigError` naming the key and what it expected.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from graphrec_dist.errors import ConfigError

# Graph3's side relations by name, as ``model.exclude_relations`` spells them: the node type a
# book links to, or "similar" for book-book similarity (data.bundle maps names to edge types;
# kept here so that reading a config does not import torch).
RELATION_NAMES = ("tag", "author", "language", "year_bin", "similar")


@dataclass
class SplitConfig:
    mode: Literal["random", "last"] = "random"  # random leave-one-out, or the last two by file order
    seed: int = 42
    min_interactions: int = 3  # users with fewer stay train-only
    # Inductive protocols (docs/EVALUATION.md). cold_items: this share of items loses every
    # interaction from training (side relations stay); the removed pairs become cold_val/cold_test.
    # cold_users: this share of users is kept out of training; each is scored from a history.
    cold_items: float = 0.0
    cold_users: float = 0.0

    def __post_init__(self) -> None:
        _require(self.min_interactions >= 3, "data.split.min_interactions", "an integer >= 3")
        _require(0.0 <= self.cold_items <= 0.5, "data.split.cold_items", "a fraction in [0, 0.5]")
        _require(0.0 <= self.cold_users <= 0.5, "data.split.cold_users", "a fraction in [0, 0.5]")


@dataclass
class DataConfig:
    source: Literal["synth", "goodbooks", "csv"] = "synth"
    raw_dir: str = "data/raw/synth"  # where the raw CSV files are (or are generated to)
    bundle_dir: str = "data/bundles/synth"  # the built Graph3 bundle
    # Generator (source=synth): written to raw_dir when it holds no ratings file yet.
    synth_users: int = 2000
    synth_seed: int = 0
    books_from: Optional[str] = None  # copy real books/tags/book_tags from here
    # Bring-your-own-data (source=csv): a YAML spec of files and columns (see README).
    csv_spec: Optional[str] = None
    # The Graph3 recipe.
    min_rating: int = 4
    min_user_interactions: int = 5
    min_book_interactions: int = 5
    tag_min_books: int = 10
    tag_top_per_book: int = 50
    sim_top_k: int = 30
    sim_min: float = 0.10
    tfidf_min_df: int = 2
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self) -> None:
        _require(self.synth_users > 0, "data.synth_users", "a positive integer")
        _require(1 <= self.min_rating <= 5, "data.min_rating", "an integer in 1..5")
        _require(self.min_user_interactions >= 1, "data.min_user_interactions", "an integer >= 1")
        _require(self.min_book_interactions >= 1, "data.min_book_interactions", "an integer >= 1")
        _require(self.sim_top_k >= 0, "data.sim_top_k", "an integer >= 0")
        _require(0.0 <= self.sim_min <= 1.0, "data.sim_min", "a number in [0, 1]")
        _require(self.source != "csv" or self.csv_spec is not None, "data.csv_spec",
                 "a path to a CSV spec YAML when data.source=csv")


ModelName = Literal["graphsage", "graphsage_ui", "popularity", "mf", "ease", "lightgcn", "lightgcn_ui",
                    "content_knn", "rp3beta", "ease_content"]


@dataclass
class Rp3Config:
    """rp3beta (Paudel et al. 2017): item-item weights of a 3-step random walk item -> user -> item,
    each transition probability raised to ``alpha``, divided by the target item's degree^``beta``,
    each item keeping its ``top_k`` heaviest neighbours."""

    alpha: float = 1.0
    beta: float = 0.5
    top_k: int = 100

    def __post_init__(self) -> None:
        _require(self.alpha > 0, "model.rp3.alpha", "a positive number")
        _require(self.beta >= 0, "model.rp3.beta", "a number >= 0")
        _require(self.top_k >= 1, "model.rp3.top_k", "an integer >= 1")


@dataclass
class ContentBlendConfig:
    """ease_content: EASE's scores plus ``weight`` x |history|^-``norm`` x the summed TF-IDF
    similarity of each item to the user's history (the text part also scores cold items)."""

    weight: float = 0.2
    norm: float = 0.5

    def __post_init__(self) -> None:
        _require(self.weight >= 0, "model.content.weight", "a number >= 0")
        _require(self.norm >= 0, "model.content.norm", "a number >= 0")


@dataclass
class PathConfig:
    """graphsage's high-rank path term user -> rated item -> related item over the item-item
    ``relations`` ("co_items": each item's top ``top_k`` co-interacted items from training pairs;
    "similar": the TF-IDF similarity edges), weighted by learned per-relation scales and (with
    ``edge_weights``) per-edge offsets; a user's sum is divided by |history|^``norm``. No
    relations: no path term."""

    relations: list[str] = field(default_factory=list)
    top_k: int = 50
    norm: float = 0.5
    edge_weights: bool = True
    # share of each history's items dropped while training the path term (a denoising autoencoder's
    # input dropout: the term must predict an item from part of the history, not lean on one item)
    dropout: float = 0.0
    # score a training positive with co-interaction weights that leave its own user out
    leave_user_out: bool = True
    init: float = 1.0  # initial per-relation scale alpha_r
    # Decoupled decay of the per-edge offsets (edge_weights): each step multiplies them by
    # 1 - lr * decay, lr being train.lr (scheduled), or edge_lr when that is set.
    decay: float = 0.0
    # The offsets' own step. None: Adam at train.lr, whose per-parameter normalised step moves an
    # edge seen once as far as one seen in every batch. A number: momentum SGD at that step (Adam's
    # moments with eps=1, far above the offsets' gradients, so the step is lr times the running
    # mean gradient): a frequent edge moves further than a rare one, as in a ridge regression.
    edge_lr: Optional[float] = None

    def __post_init__(self) -> None:
        _require(set(self.relations) <= {"co_items", "similar"} and len(set(self.relations)) == len(self.relations),
                 "model.path.relations", "a list of distinct relations out of co_items, similar")
        _require(self.top_k >= 1, "model.path.top_k", "an integer >= 1")
        _require(0.0 <= self.dropout < 1.0, "model.path.dropout", "a number in [0, 1)")
        _require(self.decay >= 0, "model.path.decay", "a number >= 0")
        _require(self.edge_lr is None or self.edge_lr > 0, "model.path.edge_lr",
                 "a positive number, or null for train.lr under Adam")


@dataclass
class ModelConfig:
    name: ModelName = "graphsage"
    emb_dim: int = 64  # learnable id embedding per node type
    hidden_dim: int = 64
    num_layers: int = 2
    aggr: Literal["mean", "sum", "max"] = "mean"
    hetero_aggr: Literal["sum", "mean", "max"] = "sum"  # how to_hetero merges relations
    # graphsage: evaluate each to_hetero layer with its relations' root maps summed and small source
    # types projected before aggregating (same parameters and outputs, fewer FLOPs; sum/mean merges)
    fused_layers: bool = True
    dropout: float = 0.0
    norm: Literal["none", "layer", "batch"] = "none"
    skip: bool = True  # add the input embedding to each layer's output (residual)
    edge_weight: bool = True  # scale messages by edge_weight where a relation has one
    # Side relations left out of the graph (graphsage, lightgcn): any of tag, author, language,
    # year_bin, similar. For ablations; the user-book relation cannot be left out.
    exclude_relations: list[str] = field(default_factory=list)
    lightgcn_layers: int = 3
    ease_lambda: float = 500.0
    # EDLAE (Steck 2020): EASE with dropout p of the input, i.e. the L2 penalty
    # lambda*I + p/(1-p)*diag(XᵀX); 0 is EASE.
    ease_dropout: float = 0.0
    rp3: Rp3Config = field(default_factory=Rp3Config)
    content: ContentBlendConfig = field(default_factory=ContentBlendConfig)
    # How graphsage scores a (user, item) pair from its output embeddings: a dot product, or the
    # cosine divided by ``temperature`` (bounded scores; the temperature sets the softmax's sharpness).
    score: Literal["dot", "cosine"] = "dot"
    temperature: float = 1.0
    emb_dropout: float = 0.0  # graphsage: dropout on the id embeddings fed to the first layer
    item_bias: bool = False  # graphsage: a learned per-item score offset added to every score
    user_id_embedding: bool = True  # graphsage: false = one shared input vector for every user
    # graphsage, full-graph training: share of each batch user's in-edges dropped in the last layer
    history_dropout: float = 0.0
    # graphsage: share of items (and of users with id embeddings) that each training step treats as
    # new: the id embedding becomes a learned "unknown" vector and an item's ratings are hidden.
    # Nodes without training interactions always get the unknown vector (docs/EVALUATION.md).
    id_dropout: float = 0.0
    # graphsage: a book->book relation from training co-interactions, each item's top ``co_items``
    # items by the cosine of their user sets (weighted edges; 0 = no such relation).
    co_items: int = 0
    # graphsage: the high-rank path term over item-item relations (model.path.*; models/paths.py).
    path: PathConfig = field(default_factory=PathConfig)

    def __post_init__(self) -> None:
        _require(self.emb_dim > 0, "model.emb_dim", "a positive integer")
        _require(self.hidden_dim > 0, "model.hidden_dim", "a positive integer")
        _require(self.num_layers >= 1, "model.num_layers", "an integer >= 1")
        _require(0.0 <= self.dropout < 1.0, "model.dropout", "a number in [0, 1)")
        _require(self.ease_lambda > 0, "model.ease_lambda", "a positive number")
        _require(0.0 <= self.ease_dropout < 1.0, "model.ease_dropout", "a number in [0, 1)")
        _require(all(r in RELATION_NAMES for r in self.exclude_relations), "model.exclude_relations",
                 f"a list of relation names from {', '.join(RELATION_NAMES)}")
        _require(self.temperature > 0, "model.temperature", "a positive number")
        _require(0.0 <= self.emb_dropout < 1.0, "model.emb_dropout", "a number in [0, 1)")
        _require(0.0 <= self.history_dropout < 1.0, "model.history_dropout", "a number in [0, 1)")
        _require(0.0 <= self.id_dropout < 1.0, "model.id_dropout", "a number in [0, 1)")
        _require(self.co_items >= 0, "model.co_items", "an integer >= 0 (0 = no co-interaction relation)")
        _require(self.lightgcn_layers >= 0, "model.lightgcn_layers", "an integer >= 0 (0 = matrix factorisation)")


@dataclass
class TrainConfig:
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.0  # AdamW decoupled decay
    l2: float = 1e-4  # L2 on the batch's input embeddings, added to the BPR loss
    batch_size: int = 2048  # seed (user, positive) edges per batch
    num_neighbors: list[int] = field(default_factory=lambda: [15, 10])
    neg_per_pos: int = 1
    # graphsage's training regime: "full_graph" runs every layer over the whole graph each step
    # (exact, no sampling; for graphs that fit one machine; better and as fast on MovieLens 100K),
    # "sampled" trains on LinkNeighborLoader subgraphs with train.num_neighbors (for graphs beyond
    # one machine's memory).
    mode: Literal["full_graph", "sampled"] = "full_graph"
    # train.mode=sampled: "blocks" samples per-layer blocks around each batch in the model and
    # computes only the rows each layer needs (graphrec_dist/block_sampler.py); "pyg" trains on
    # LinkNeighborLoader subgraphs (PyG's own pipeline, every layer over the whole subgraph).
    sampler: Literal["blocks", "pyg"] = "blocks"
    # "bpr": -log sigmoid(pos - neg) per negative; "softmax": cross-entropy of the positive against
    # every item (models that score all items in a step: mf, lightgcn, full-graph graphsage) or
    # against its neg_per_pos sampled negatives (sampled graphsage).
    loss: Literal["bpr", "softmax"] = "bpr"
    # softmax over every item: 0 ranks each positive against the whole catalogue; N > 0 against N
    # items drawn uniformly per step and shared by the batch (for catalogues too big to score).
    softmax_negatives: int = 0
    # softmax over every item: compute it once per distinct user of a batch, not once per (user,
    # positive) row. The same loss with fewer scores (a large batch holds several positives of
    # most users), rounded differently.
    softmax_per_user: bool = False
    # Full softmax (per user): each positive competes only with the items its user has not seen in
    # training, as at evaluation (where those are masked), not with the user's other positives.
    mask_seen: bool = False
    # Drop each batch's (user, positive) edges from its message passing: sampled mode, from the
    # subgraph; full_graph mode, from the batch users' history in the last layer.
    exclude_seed_edges: bool = False
    edges_per_epoch: Optional[int] = None  # cap for quick runs; None = every training edge
    max_steps: Optional[int] = None  # stop after this many optimiser steps (tests, smoke runs)
    # Stop (validating that epoch) once the epochs' training seconds, validation excluded, reach
    # this: a wall-clock budget for races between models. None = no budget.
    time_budget_s: Optional[float] = None
    num_workers: int = 0  # sampling worker processes per rank
    num_threads: int = 0  # torch intra-op threads per process (0: torch's default); 1 suits a busy box
    seed: int = 0
    lr_schedule: Literal["none", "cosine"] = "none"
    amp: bool = True  # bf16 autocast; only takes effect on CUDA (unless debug.amp_on_cpu)
    patience: int = 5  # evaluations without validation NDCG@10 improving before stopping
    resume: str = "auto"  # auto | never | path to a checkpoint
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints (0 = end of epoch only)

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "train.epochs", "an integer >= 1")
        _require(self.lr > 0, "train.lr", "a positive number")
        _require(self.batch_size > 0, "train.batch_size", "a positive integer")
        _require(len(self.num_neighbors) >= 1 and all(n > 0 or n == -1 for n in self.num_neighbors),
                 "train.num_neighbors", "a non-empty list of positive integers (or -1 for all)")
        _require(self.neg_per_pos >= 1, "train.neg_per_pos", "an integer >= 1")
        _require(self.edges_per_epoch is None or self.edges_per_epoch > 0, "train.edges_per_epoch",
                 "a positive integer or null")
        _require(self.time_budget_s is None or self.time_budget_s > 0, "train.time_budget_s",
                 "a positive number of seconds or null")
        _require(self.num_workers >= 0, "train.num_workers", "an integer >= 0")
        _require(self.softmax_negatives >= 0, "train.softmax_negatives", "an integer >= 0 (0: every item)")
        _require(self.num_threads >= 0, "train.num_threads", "an integer >= 0")
        full_softmax_per_user = self.loss == "softmax" and self.softmax_negatives == 0 and self.softmax_per_user
        _require(not self.mask_seen or full_softmax_per_user, "train.mask_seen",
                 "false unless train.loss=softmax, train.softmax_negatives=0 and "
                 "train.softmax_per_user=true (it masks each user's row of the full softmax)")
        _require(self.patience >= 1, "train.patience", "an integer >= 1")


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [10, 20, 50])
    every: int = 1  # validate every N epochs
    protocol: Literal["full", "sampled"] = "full"
    sampled_candidates: list[int] = field(default_factory=lambda: [200, 1000, 2000])
    sampled_num_users: Optional[int] = None  # fixed user subset for the sampled protocol
    sampled_seed: int = 0
    exclude_other_holdout: bool = False  # mask the validation item when testing, and vice versa
    user_chunk: int = 1024  # users scored per matrix multiply
    export_per_user: bool = False  # write (user, held-out item, rank) per user
    # false: no test (or inductive test) evaluation at the end of a run; the grid points of
    # graphrec-dist tune are chosen on validation alone, so their test figures are never computed.
    test: bool = True

    def __post_init__(self) -> None:
        _require(len(self.ks) >= 1 and all(k > 0 for k in self.ks), "eval.ks", "a list of positive integers")
        _require(self.every >= 1, "eval.every", "an integer >= 1")
        _require(self.user_chunk > 0, "eval.user_chunk", "a positive integer")
        _require(len(self.sampled_candidates) >= 1 and all(c >= 2 for c in self.sampled_candidates),
                 "eval.sampled_candidates", "a list of integers >= 2 (the held-out item + C-1 negatives)")
        _require(self.sampled_num_users is None or self.sampled_num_users > 0, "eval.sampled_num_users",
                 "a positive integer or null")


@dataclass
class DistConfig:
    backend: Literal["auto", "nccl", "gloo"] = "auto"  # auto: nccl on CUDA, gloo on CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    launcher: Literal["local", "torchrun", "ray"] = "local"
    num_workers: int = 2  # Ray workers
    use_gpu: bool = False  # Ray workers get a GPU each
    cpus_per_worker: int = 1
    ray_address: Optional[str] = None  # None: start or join a local Ray
    storage_path: Optional[str] = None  # Ray Train storage (folder, shared FS or cloud URI)
    max_failures: int = 0  # Ray: restarts of a failed worker group
    # Ray: the fewest workers a restart may go on with when a worker's node is gone (Ray Train's
    # elastic scaling, num_workers=(min_workers, num_workers)); null: always num_workers. Exact
    # with dist.sharding=users, since its checkpoints resume on any number of ranks (elastic.py).
    min_workers: Optional[int] = None
    # "replicate": every rank holds the whole bundle and every parameter (DDP splits the seed
    # edges). "users": rank r holds only its block of users (their id embeddings, optimizer state,
    # edges and splits) and the replicated item side; full-graph graphsage only (docs/SCALING.md).
    sharding: Literal["replicate", "users"] = "replicate"

    def __post_init__(self) -> None:
        _require(self.num_workers >= 1, "dist.num_workers", "an integer >= 1")
        _require(self.min_workers is None or 1 <= self.min_workers <= self.num_workers, "dist.min_workers",
                 f"null or an integer in 1..dist.num_workers ({self.num_workers})")


@dataclass
class RunConfig:
    out_dir: str = "runs/default"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    progress: bool = True  # tqdm bars on rank 0
    # TensorBoard event files in out_dir/tensorboard (rank 0; the tensorboard extra): opt-in,
    # so a run folder's contents do not depend on what is installed (graphrec_dist.tracking).
    tensorboard: bool = False


@dataclass
class TuneConfig:
    """The search grid of ``graphrec-dist tune`` (and of the bench's real-data tables): entries
    ``section.key=v1,v2,...``; every combination is trained and the best validation NDCG@10 wins.
    A baseline's preset declares its grid so that it is tuned on whatever data it is compared on."""

    grid: list[str] = field(default_factory=list)


@dataclass
class DebugConfig:
    """Switches for tests: injected faults and code paths a CPU-only machine would not take."""

    # fail after this global step (fault tests); a run that resumes from a checkpoint does not
    # fail again, so the same command run again completes.
    fail_after_step: Optional[int] = None
    # what happens at fail_after_step: "raise" an exception; "hang": the last rank writes its pid
    # to out_dir/hang_rank{r}.pid and sleeps (a test SIGKILLs it); "hang_in_save": rank 0 does the
    # same while saving that step's checkpoint, between the temp file and the rename.
    fail_mode: Literal["raise", "hang", "hang_in_save"] = "raise"
    # train.amp on the CPU as well (bf16 autocast on the CPU), so a machine without a GPU runs the
    # mixed-precision code path that a CUDA run takes; CPU results change with it.
    amp_on_cpu: bool = False


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)

    def __post_init__(self) -> None:
        # The loader samples one hop per entry and the model runs one layer per hop: a mismatch
        # would silently waste samples or leave the last layer without neighbours.
        if self.model.name in ("graphsage", "graphsage_ui") and self.train.mode == "sampled":
            _require(len(self.train.num_neighbors) == self.model.num_layers, "train.num_neighbors",
                     f"one fanout per layer (model.num_layers={self.model.num_layers}), "
                     f"got {len(self.train.num_neighbors)}: {self.train.num_neighbors}")
        if self.dist.sharding == "users":
            for key, ok, expected in _sharding_requirements(self):
                _require(ok, key, f"{expected} with dist.sharding=users")
        parse_grid(self.tune.grid)  # a typo in a grid key fails when the preset is read, not mid-search

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _sharding_requirements(cfg: Config) -> list[tuple[str, bool, str]]:
    """What user-sharded training supports, as (key, holds, expected). Why each one:
    - full-graph graphsage only: a sampled subgraph needs neighbours that live on other ranks;
    - sum/mean aggregation: a rank's partial sums over its users add up to the exact aggregate;
    - the random ops left out (dropouts, path.dropout) would draw differently on each rank, so the
      replicated item side would drift apart between ranks;
    - co-interaction relations (model.co_items, co_items paths) count every user's training pairs;
    - the evaluator's sampled protocol and per-user export deal out global user blocks."""
    m, t, e = cfg.model, cfg.train, cfg.eval
    return [("model.name", m.name in ("graphsage", "graphsage_ui"), "graphsage or graphsage_ui"),
            ("train.mode", t.mode == "full_graph", "full_graph (sampled subgraphs would cross ranks)"),
            ("model.aggr", m.aggr in ("mean", "sum"), "mean or sum"),
            ("model.norm", m.norm != "batch", "none or layer (batch statistics would differ per rank)"),
            ("model.emb_dropout", m.emb_dropout == 0, "0"),
            ("model.dropout", m.dropout == 0, "0"),
            ("model.history_dropout", m.history_dropout == 0, "0"),
            ("model.co_items", m.co_items == 0, "0"),
            ("model.path.relations", "co_items" not in m.path.relations, "no co_items (similar paths are supported)"),
            ("model.path.dropout", m.path.dropout == 0, "0"),
            ("eval.protocol", e.protocol == "full", "full"),
            ("eval.export_per_user", not e.export_per_user, "false")]


def parse_grid(entries: list[str] | tuple[str, ...]) -> dict[str, list[Any]]:
    """``["model.ease_lambda=10,30,100", ...]`` -> {"model.ease_lambda": [10, 30, 100], ...}, the
    values parsed as YAML (``model.exclude_relations=[tag],[]`` is two lists). Each key must name
    an option of the schema, outside ``run`` and ``tune``; a key given twice keeps its last values."""
    grid: dict[str, list[Any]] = {}
    for entry in entries:
        key, raw = entry.split("=", 1) if "=" in entry else (entry, "")
        key = key.strip()
        try:
            values = yaml.safe_load(f"[{raw}]") if raw.strip() else None
        except yaml.YAMLError:
            values = None
        if not values:
            raise ConfigError(f"grid entry '{entry}': expected section.key=value1,value2,...")
        key = new_key(key, values[0])
        if key.split(".")[0] in ("run", "tune", "debug") or not _is_option(Config, key.split(".")):
            raise ConfigError(f"grid entry '{entry}': '{key}' is not an option that can be tuned "
                              "(a section.key of data, model, train, eval or dist)")
        grid[key] = values
    return grid


def _is_option(cls: type, parts: list[str]) -> bool:
    """Whether the dotted path ``parts`` names a leaf option of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    if not parts or parts[0] not in {f.name for f in dataclasses.fields(cls)}:
        return False
    tp = hints[parts[0]]
    if dataclasses.is_dataclass(tp):
        return _is_option(tp, parts[1:])
    return len(parts) == 1


def _require(ok: bool, key: str, expected: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': expected {expected}")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML preset at ``path`` (if any), then ``section.key=value`` overrides."""
    tree: dict[str, Any] = read_yaml(path) if path is not None else {}
    return from_dict(apply_overrides(tree, overrides))


def apply_overrides(tree: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a nested mapping in place and return it. The
    mapping's old spellings are moved first and an override's key is read in today's spelling
    (:data:`MOVED`), so either spelling overrides either; one key given in both spellings with
    different values is a ConfigError."""
    upgrade(tree)
    given: dict[str, tuple[str, Any]] = {}
    for item in overrides:
        key, value = parse_override(item)
        new = new_key(key, value)
        spelled, before = given.get(new, (key, value))
        if spelled != key and before != value:
            raise ConfigError(f"overrides '{spelled}={before}' and '{key}={value}' set the same option "
                              f"'{new}' to different values; give it once, as '{new}'")
        given[new] = (key, value)
        _set_dotted(tree, new, value)
    return tree


def read_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML mapping from ``path``; a missing file, bad YAML or a non-mapping raise ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} not found: {p}")
    try:
        tree = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {p} is not valid YAML: {exc}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{what} {p}: expected a mapping at the top level")
    return tree


# A command-line token that is a config override, not an option or a positional.
OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+=")


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser``'s arguments with ``section.key=value`` overrides read wherever they stand.

    argparse gives a ``nargs="*"`` positional only the first run of positionals, so an override
    after an option (``data build CONFIG --out O data.split.seed=3``) would be an "unrecognized
    argument". ``parse_intermixed_args`` fixes that for flat parsers but refuses subparsers
    (``data build``); leftovers of ``parse_known_args`` that look like overrides work for both.
    They join ``args.overrides`` after the ones argparse placed, which keeps the command-line order
    (argparse fills the positional at its first run), so a later override of a key still wins.
    """
    args, extra = parser.parse_known_args(argv)
    stray = [token for token in extra if not OVERRIDE.match(token)]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides or []) + extra
    return args


def parse_override(item: str) -> tuple[str, Any]:
    """``train.lr=1e-3`` -> ("train.lr", 0.001); the value is parsed as YAML (lists, null, bools)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected section.key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{key}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


# Keys that older runs wrote into their config.yaml and checkpoints (and older presets and
# override lists spell), in their place today: every saved run and older config still loads.
# A key moved into a section of the same name (``model.path``, once the list of relations) moves
# only when its value is not already a mapping. Moves apply in this order.
MOVED = {
    "model.path": "model.path.relations",
    "model.path_top_k": "model.path.top_k",
    "model.path_norm": "model.path.norm",
    "model.path_edge_weights": "model.path.edge_weights",
    "model.path_dropout": "model.path.dropout",
    "model.path_leave_user_out": "model.path.leave_user_out",
    "model.path_init": "model.path.init",
    "model.path_decay": "model.path.decay",
    "model.path_edge_lr": "model.path.edge_lr",
    "train.fail_after_step": "debug.fail_after_step",
    "train.fail_mode": "debug.fail_mode",
    "train.amp_on_cpu": "debug.amp_on_cpu",
}
# Keys read and ignored: options since removed.
RETIRED = ("eval.infer_batch",)


def new_key(key: str, value: Any = None) -> str:
    """Today's spelling of the dotted ``key`` set to ``value`` (:data:`MOVED`)."""
    new = MOVED.get(key)
    if new is None or (new.startswith(key + ".") and isinstance(value, dict)):
        return key
    return new


def upgrade(tree: dict[str, Any]) -> dict[str, Any]:
    """Move every old spelling in the nested mapping ``tree`` to its place today and drop retired
    keys, in place; returns ``tree``. An option given in both spellings with different values is a
    ConfigError naming both."""
    for old, new in MOVED.items():
        parent, leaf = _parent(tree, old)
        if parent is None or leaf not in parent or new_key(old, parent[leaf]) == old:
            continue
        value = parent.pop(leaf)
        there, name = _parent(tree, new)
        if there is not None and name in there and there[name] != value:
            raise ConfigError(f"config key '{old}' is the old spelling of '{new}', and both are given with different "
                              f"values ({value!r} and {there[name]!r}); keep '{new}' only")
        _set_dotted(tree, new, value)
    for key in RETIRED:
        parent, leaf = _parent(tree, key)
        if parent is not None:
            parent.pop(leaf, None)
    return tree


def _parent(tree: Any, key: str) -> tuple[Optional[dict[str, Any]], str]:
    """(the mapping that holds the dotted ``key``'s last part, that part); None when a section on
    the way is missing or not a mapping (the schema check reports the latter)."""
    *path, leaf = key.split(".")
    node = tree
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), leaf


def from_dict(tree: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a nested mapping (``tree`` itself is not changed;
    old spellings are read in their place today, :func:`upgrade`)."""
    return _build(Config, upgrade(copy.deepcopy(tree)), prefix="")


def _build(cls: type, tree: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "config"
    if not isinstance(tree, dict):
        raise ConfigError(f"config key '{where}': expected a mapping, got {type(tree).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in tree.items():
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}' (known in {where}: {', '.join(sorted(names))})")
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - guarded by the checks above
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, prefix=key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}': expected one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"config key '{key}': unsupported type {tp}")  # pragma: no cover
