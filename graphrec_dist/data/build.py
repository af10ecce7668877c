"""The Graph3 builder: raw files (per a :class:`SourceSpec`) -> edges, splits, tables and meta.

``build_arrays`` does the work in memory; :mod:`graphrec_dist.data.prepare` caches and writes it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from graphrec_dist.config import DataConfig
from graphrec_dist.data import graph3, interactions as inter
from graphrec_dist.data.bundle import BOOK, RATES, SIMILAR, USER, edge_key, reverse_type
from graphrec_dist.data.sources import check_range, find_file, read_header, read_table, to_int_column
from graphrec_dist.data.spec import InteractionsSpec, SourceSpec, UsersSpec
from graphrec_dist.errors import DataError

EdgeType = tuple[str, str, str]


@dataclass
class BuiltGraph:
    """Everything a bundle directory holds, in memory."""

    num_nodes: dict[str, int]
    edges: dict[EdgeType, tuple[np.ndarray, np.ndarray]]  # (edge_index [2,E] int64, weight float32)
    splits: dict[str, np.ndarray]  # int64 [n, 2] (user, book); "cold_items": int64 [n]
    books: pd.DataFrame
    users: pd.DataFrame
    vocab: dict[str, list[str]] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        return {"num_nodes": dict(sorted(self.num_nodes.items())),
                "num_edges": {edge_key(e): int(ei.shape[1]) for e, (ei, _) in sorted(self.edges.items())},
                # The inductive protocols' splits are listed when they are on.
                "splits": {k: int(v.shape[0]) for k, v in self.splits.items()
                           if len(v) or k in ("train", "val", "test")}}


def input_files(raw_dir: str | Path, spec: SourceSpec) -> dict[str, Path]:
    """Name -> path of every input file the spec reads (missing required ones raise DataError)."""
    files = {"interactions": find_file(raw_dir, _stem(spec.interactions.file)),
             "items": find_file(raw_dir, _stem(spec.items.file))}
    if spec.extra_interactions is not None:
        files["extra_interactions"] = find_file(raw_dir, _stem(spec.extra_interactions.file))
    if spec.item_tags is not None:
        files["item_tags"] = find_file(raw_dir, _stem(spec.item_tags.file))
    if spec.users is not None:
        files["users"] = find_file(raw_dir, _stem(spec.users.file))
    for extra in spec.extra_files:
        found = find_file(raw_dir, _stem(extra), required=False)
        if found is not None:
            files[_stem(extra)] = found
    return files


def check_columns(files: dict[str, Path], spec: SourceSpec) -> None:
    """Check every file has the columns the spec names, before any heavy work."""
    wanted: dict[str, list[str]] = {"interactions": interaction_columns(spec.interactions)}
    if spec.extra_interactions is not None:
        wanted["extra_interactions"] = interaction_columns(spec.extra_interactions)
    wanted["items"] = _item_columns(spec)
    if spec.item_tags is not None:
        t = spec.item_tags
        wanted["item_tags"] = [t.item, t.tag] + ([t.count] if t.count else [])
    if spec.users is not None:
        wanted["users"] = _user_columns(spec.users)
    for name, cols in wanted.items():
        read_header(files[name], cols)


def interaction_columns(ispec: InteractionsSpec) -> list[str]:
    return [ispec.user, ispec.item] + [c for c in (ispec.rating, ispec.timestamp) if c]


def _item_columns(spec: SourceSpec) -> list[str]:
    ispec = spec.items
    return list(dict.fromkeys([ispec.id] + [c for c in (ispec.title, ispec.authors, ispec.key) if c]
                              + [c.column for c in ispec.columns.values()] + list(ispec.text)
                              + [b.column for b in ispec.all_bins()]))


def _user_columns(uspec: UsersSpec) -> list[str]:
    return list(dict.fromkeys([uspec.id] + [c.column for c in uspec.columns.values()]
                              + [b.column for b in uspec.bins]))


def _stem(name: str) -> str:
    for suffix in (".csv.gz", ".csv"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_interactions(path: Path, ispec: InteractionsSpec) -> pd.DataFrame:
    """(user, item, rating) rows in file order, or in timestamp order (stable) when one is named."""
    frame = read_table(path, interaction_columns(ispec), int_columns=[ispec.user, ispec.item])
    if ispec.rating:
        frame[ispec.rating] = checked_ratings(frame[ispec.rating], ispec, path)
    if ispec.timestamp:
        frame = frame.iloc[np.argsort(frame[ispec.timestamp].to_numpy(), kind="stable")]
    out = pd.DataFrame({"user": frame[ispec.user].to_numpy(np.int64), "item": frame[ispec.item].to_numpy(np.int64)})
    out["rating"] = frame[ispec.rating].to_numpy(np.float64) if ispec.rating else np.inf
    return out


def checked_ratings(values: pd.Series, ispec: InteractionsSpec, path: Path, first_line: int = 2) -> pd.Series:
    """The rating column as numbers; DataError naming the first line that is not one or lies out of range."""
    rating = pd.to_numeric(values, errors="coerce")
    if rating.isna().any():
        pos = int(np.flatnonzero(rating.isna().to_numpy())[0])
        raise DataError(f"{path}: column {ispec.rating!r}, line {pos + first_line}: expected a number, "
                        f"got {values.iloc[pos]!r}")
    check_range(rating, ispec.rating_min, ispec.rating_max, path, ispec.rating, first_line)
    return rating


def build_arrays(raw_dir: str | Path, spec: SourceSpec, cfg: DataConfig) -> BuiltGraph:
    """Run the Graph3 recipe on the spec's files in ``raw_dir``."""
    spec.side_node_types()  # a clash of node type names is a ConfigError before any reading
    files = input_files(raw_dir, spec)
    check_columns(files, spec)
    main = read_interactions(files["interactions"], spec.interactions)
    extra = (read_interactions(files["extra_interactions"], spec.extra_interactions)
             if spec.extra_interactions is not None else main.iloc[:0])
    users, items = inter.positives(main["user"].to_numpy(), main["item"].to_numpy(), main["rating"].to_numpy(),
                                   extra["user"].to_numpy(), extra["item"].to_numpy(), cfg.min_rating)
    keep = inter.k_core(users, items, cfg.min_user_interactions, cfg.min_book_interactions)
    if not keep.any():
        raise no_rows_error(files["interactions"], cfg)
    pairs = inter.remap(users[keep], items[keep])
    splits = _splits(pairs, cfg)
    train = splits["train"]
    built = item_side(files, spec, cfg, pairs.book_ids, pairs.user_ids)
    built.splits = splits
    _add(built, RATES, train[:, 0], train[:, 1], np.ones(len(train), np.float32), None)
    if spec.users is not None:
        _add_user_relations(built, files["users"], spec.users, pairs.user_ids)
    return built


def no_rows_error(path: Path, cfg: DataConfig) -> DataError:
    """The error when the k-core filter leaves nothing."""
    return DataError(f"{path}: no interactions left after keeping rating >= {cfg.min_rating} and users/items "
                     f"with >= {cfg.min_user_interactions}/{cfg.min_book_interactions} interactions")


def item_side(files: dict[str, Path], spec: SourceSpec, cfg: DataConfig, book_ids: np.ndarray,
              user_ids: np.ndarray) -> BuiltGraph:
    """The graph's item side for the kept items ``book_ids`` (sorted original ids): books.csv's
    table, every side relation and the similarity edges; the user map; no interactions or splits."""
    table = _item_table(files["items"], spec, book_ids)
    built = BuiltGraph({USER: len(user_ids), BOOK: len(book_ids)}, {}, {}, _books_frame(table, spec),
                       pd.DataFrame({"user_id": user_ids}))
    _add_side_relations(built, table, spec, cfg, files)
    return built


def _splits(pairs: inter.Interactions, cfg: DataConfig) -> dict[str, np.ndarray]:
    """Every split as int64 [n, 2] (user, book) rows: the inductive protocols' rows first, then
    leave-one-out over the rest (the rows keep their file order for ``split.mode=last``)."""
    n_users, n_books = len(pairs.user_ids), len(pairs.book_ids)
    sc = cfg.split
    cold = inter.cold_split(pairs.users, pairs.books, n_users, n_books, sc.cold_items, sc.cold_users, sc.seed,
                            sc.min_interactions)
    stacked = np.stack([pairs.users, pairs.books], axis=1)
    warm = cold.warm
    train_rows, val_rows, test_rows = inter.leave_one_out(pairs.users[warm], n_users, sc.mode, sc.seed,
                                                          sc.min_interactions)
    train = stacked[warm[train_rows]]
    splits = {"train": train[np.lexsort((train[:, 1], train[:, 0]))], "val": stacked[warm[val_rows]],
              "test": stacked[warm[test_rows]]}
    for name, rows in (("cold_val", cold.cold_val), ("cold_test", cold.cold_test),
                       ("cold_user_history", cold.user_history), ("cold_user_val", cold.user_val),
                       ("cold_user_test", cold.user_test)):
        part = stacked[rows]
        splits[name] = part[np.lexsort((part[:, 1], part[:, 0]))]
    splits["cold_items"] = cold.cold_items
    return splits


def _item_table(path: Path, spec: SourceSpec, book_ids: np.ndarray) -> pd.DataFrame:
    """One row per kept item in index order, with every column the spec uses."""
    ispec = spec.items
    cols = _item_columns(spec)
    ints = [ispec.id] + ([ispec.key] if ispec.key and ispec.key != ispec.id else [])
    table = _unique_ids(read_table(path, cols, int_columns=ints), path, ispec.id)
    missing = np.setdiff1d(book_ids, table.index.to_numpy())
    if len(missing):
        raise DataError(f"{path}: {len(missing)} item id(s) used in the interactions are not in column "
                        f"{ispec.id!r}, e.g. {missing[:5].tolist()}")
    return table.loc[book_ids].reset_index(drop=True)


def _unique_ids(table: pd.DataFrame, path: Path, id_col: str) -> pd.DataFrame:
    """``table`` indexed by its id column; DataError naming the first duplicate id's line."""
    dup = table[id_col].duplicated()
    if dup.any():
        pos = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{path}: column {id_col!r}, line {pos + 2}: duplicate id {table[id_col].iloc[pos]}")
    return table.set_index(id_col, drop=False)


def _books_frame(table: pd.DataFrame, spec: SourceSpec) -> pd.DataFrame:
    ispec = spec.items
    out = pd.DataFrame({"book_id": table[ispec.id].to_numpy(np.int64)})
    out["title"] = table[ispec.title].fillna("").astype(str) if ispec.title else out["book_id"].astype(str)
    out["authors"] = table[ispec.authors].fillna("").astype(str) if ispec.authors else ""
    return out


def _add(built: BuiltGraph, etype: EdgeType, src: np.ndarray, dst: np.ndarray, w: np.ndarray,
         vocab: list[str] | None) -> None:
    """Add a relation and its reverse (same weights); register a side node type's vocabulary."""
    if vocab is not None:
        built.vocab[etype[2]] = vocab
        built.num_nodes[etype[2]] = len(vocab)
    built.edges[etype] = (np.stack([src, dst]).astype(np.int64), w.astype(np.float32))
    rev = reverse_type(etype)
    if rev != etype:
        built.edges[rev] = (np.stack([dst, src]).astype(np.int64), w.astype(np.float32))


def _add_side_relations(built: BuiltGraph, table: pd.DataFrame, spec: SourceSpec, cfg: DataConfig,
                        files: dict[str, Path]) -> None:
    ispec = spec.items
    if spec.item_tags is not None:
        tspec = spec.item_tags
        cols = [tspec.item, tspec.tag] + ([tspec.count] if tspec.count else [])
        tags = read_table(files["item_tags"], cols, int_columns=[tspec.item])
        tag_ids = tags[tspec.tag]
        numeric = pd.to_numeric(tag_ids, errors="coerce")
        tag_ids = (numeric.astype(np.int64) if numeric.notna().all() and (numeric % 1 == 0).all()
                   else tag_ids.fillna("").astype(str))
        counts = (pd.to_numeric(tags[tspec.count], errors="coerce").fillna(0).to_numpy()
                  if tspec.count else np.ones(len(tags)))
        key = table[ispec.key or ispec.id]
        keys = to_int_column(key, files["items"], ispec.key or ispec.id).to_numpy()
        rel = graph3.tag_relation(keys, tags[tspec.item].to_numpy(), tag_ids.to_numpy(), counts,
                                  cfg.tag_min_books, cfg.tag_top_per_book)
        _add(built, (BOOK, tspec.relation or f"has_{tspec.node_type}", tspec.node_type),
             rel.src, rel.dst, rel.weight, rel.vocab)
    for ntype, cspec in ispec.columns.items():
        rel = graph3.multi_value_relation(table[cspec.column], cspec.sep, cspec.missing)
        _add(built, (BOOK, cspec.relation or f"has_{ntype}", ntype), rel.src, rel.dst, rel.weight, rel.vocab)
    for b in ispec.all_bins():
        rel = graph3.year_bin_relation(table[b.column], b.edges, b.labels)
        _add(built, (BOOK, b.relation or f"has_{b.node_type}", b.node_type), rel.src, rel.dst, rel.weight,
             rel.vocab)
    if ispec.text:
        text = table[ispec.text[0]].fillna("").astype(str)
        for col in ispec.text[1:]:
            text = text + " " + table[col].fillna("").astype(str)
        src, dst, w = graph3.similarity_edges(text.tolist(), cfg.sim_top_k, cfg.sim_min, cfg.tfidf_min_df)
        _add(built, SIMILAR, src, dst, w, None)


def _add_user_relations(built: BuiltGraph, path: Path, uspec: UsersSpec, user_ids: np.ndarray) -> None:
    """User -> value edges (weight 1) for each users column and bin; users absent from the file get none."""
    table = _unique_ids(read_table(path, _user_columns(uspec), int_columns=[uspec.id]), path, uspec.id)
    present = np.flatnonzero(np.isin(user_ids, table.index.to_numpy()))
    table = table.loc[user_ids[present]].reset_index(drop=True)
    for ntype, cspec in uspec.columns.items():
        rel = graph3.multi_value_relation(table[cspec.column], cspec.sep, cspec.missing)
        _add(built, (USER, cspec.relation or f"has_{ntype}", ntype), present[rel.src], rel.dst, rel.weight,
             rel.vocab)
    for b in uspec.bins:
        rel = graph3.year_bin_relation(table[b.column], b.edges, b.labels)
        _add(built, (USER, b.relation or f"has_{b.node_type}", b.node_type), present[rel.src], rel.dst,
             rel.weight, rel.vocab)
