"""Which files and columns feed the Graph3 builder: the Goodbooks preset and bring-your-own-data specs.

A :class:`SourceSpec` names an interactions file (user, item, optional rating, optional timestamp),
optional extra all-positive interactions (Goodbooks' to_read), an item-metadata file whose chosen
columns become node types, an optional item-tag file with counts, an optional text for TF-IDF
similarity, numeric columns binned into node types, and an optional user-metadata file whose
columns and bins become node types linked to users. Goodbooks is one preset.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from graphrec_dist.config import read_yaml
from graphrec_dist.data.bundle import BOOK, USER
from graphrec_dist.errors import ConfigError


@dataclass
class InteractionsSpec:
    file: str  # stem (``ratings`` finds ratings.csv or ratings.csv.gz) or a file name
    user: str = "user_id"
    item: str = "item_id"
    rating: Optional[str] = None  # None: every row is a positive
    timestamp: Optional[str] = None  # rows are ordered by it (stably) before the split
    rating_min: float = 1
    rating_max: float = 5


@dataclass
class ColumnSpec:
    """A metadata column (items or users) that becomes a node type (one node per distinct value)."""

    column: str
    sep: Optional[str] = None  # multi-valued cells, e.g. "|" for "Comedy|Drama"
    missing: Optional[str] = None  # label for empty cells (None: such items get no edge)
    relation: Optional[str] = None  # edge name; default has_<node type>


@dataclass
class BinSpec:
    """A numeric column binned into a node type: bins (-inf,e0], (e0,e1], ...; the rest -> the last
    label (unknown). Every label is a node, so ``labels`` has one more entry than ``edges``."""

    column: str
    node_type: str = "year_bin"
    edges: list[float] = field(default_factory=lambda: [1950, 1970, 1990, 2005, 2015, 2030])
    labels: list[str] = field(default_factory=lambda: ["<=1950", "1951-1970", "1971-1990", "1991-2005",
                                                       "2006-2015", "2016+", "unknown"])
    relation: Optional[str] = None

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.edges) + 1:
            raise ConfigError(f"bin of column {self.column!r}: {len(self.edges)} edges need "
                              f"{len(self.edges) + 1} labels (the last for unknown), got {len(self.labels)}")
        if any(a >= b for a, b in zip(self.edges, self.edges[1:])):
            raise ConfigError(f"bin of column {self.column!r}: edges must increase, got {self.edges}")


@dataclass
class ItemsSpec:
    file: str
    id: str = "item_id"
    title: Optional[str] = None  # shown by `recommend`; defaults to the id
    authors: Optional[str] = None  # shown by `recommend` (a column name), if any
    key: Optional[str] = None  # column the item-tag file refers to (default: id)
    columns: dict[str, ColumnSpec] = field(default_factory=dict)  # node type -> column
    text: list[str] = field(default_factory=list)  # columns joined by " " for TF-IDF similarity
    bin: Optional[BinSpec] = None  # one binned column (kept for older specs; same as one entry of bins)
    bins: list[BinSpec] = field(default_factory=list)
    label: str = "item"  # what the items are called where users read it ("movie" -> "movies")

    def all_bins(self) -> list[BinSpec]:
        return ([self.bin] if self.bin is not None else []) + list(self.bins)


@dataclass
class UsersSpec:
    """A user-metadata file: each chosen column or bin becomes a node type linked to users.

    Users absent from the file (or with an empty cell and no ``missing`` label) get no edge there.
    """

    file: str
    id: str = "user_id"  # matched against the interactions' user ids
    columns: dict[str, ColumnSpec] = field(default_factory=dict)  # node type -> column
    bins: list[BinSpec] = field(default_factory=list)


@dataclass
class ItemTagsSpec:
    file: str
    item: str = "item_id"  # matched against items.key
    tag: str = "tag_id"
    count: Optional[str] = None  # None: every row counts 1
    node_type: str = "tag"
    relation: Optional[str] = None


@dataclass
class SourceSpec:
    interactions: InteractionsSpec
    items: ItemsSpec
    extra_interactions: Optional[InteractionsSpec] = None
    item_tags: Optional[ItemTagsSpec] = None
    users: Optional[UsersSpec] = None
    extra_files: list[str] = field(default_factory=list)  # also checksummed (e.g. tags.csv)

    def side_node_types(self) -> dict[str, str]:
        """Node type -> the spec key that makes it; ConfigError if two keys make the same type."""
        found: dict[str, str] = {USER: "the interactions' users", BOOK: "the items (internal type 'book')"}
        named = [(f"items.columns.{t}", t) for t in self.items.columns]
        named += [(f"items.bin(s) of {b.column!r}", b.node_type) for b in self.items.all_bins()]
        if self.item_tags is not None:
            named.append(("item_tags.node_type", self.item_tags.node_type))
        if self.users is not None:
            named += [(f"users.columns.{t}", t) for t in self.users.columns]
            named += [(f"users.bins of {b.column!r}", b.node_type) for b in self.users.bins]
        for where, ntype in named:
            if ntype in found:
                raise ConfigError(f"{where}: node type {ntype!r} is already made by {found[ntype]}; "
                                  f"give one of them another name")
            found[ntype] = where
        return found


def goodbooks_spec() -> SourceSpec:
    """The Goodbooks-10k preset: the exact Graph3 recipe's files and columns."""
    return SourceSpec(
        interactions=InteractionsSpec("ratings", user="user_id", item="book_id", rating="rating"),
        extra_interactions=InteractionsSpec("to_read", user="user_id", item="book_id"),
        items=ItemsSpec(
            "books", id="book_id", title="title", authors="authors", key="goodreads_book_id",
            columns={"author": ColumnSpec("authors", sep=",", relation="written_by"),
                     "language": ColumnSpec("language_code", missing="unk", relation="in_language")},
            text=["title", "authors"],
            bin=BinSpec("original_publication_year", relation="published_in"), label="book"),
        item_tags=ItemTagsSpec("book_tags", item="goodreads_book_id", tag="tag_id", count="count",
                               relation="has_tag"),
        extra_files=["tags"],
    )


def load_spec(path: str | Path) -> SourceSpec:
    """Read a bring-your-own-data spec YAML; unknown or missing keys and node types made twice raise
    ConfigError naming them."""
    spec = _build(SourceSpec, read_yaml(path, "csv spec file"), f"{path}")
    try:
        spec.side_node_types()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return spec


def _build(cls: type, tree: Any, where: str) -> Any:
    if not isinstance(tree, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(tree).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(tree) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(fields)})")
    kwargs = {}
    for name, value in tree.items():
        kwargs[name] = _value(fields[name].type, value, f"{where}: {name}")
    try:
        return cls(**kwargs)
    except (TypeError, ConfigError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


_NESTED = {"InteractionsSpec": InteractionsSpec, "ItemsSpec": ItemsSpec, "ItemTagsSpec": ItemTagsSpec,
           "UsersSpec": UsersSpec, "BinSpec": BinSpec, "ColumnSpec": ColumnSpec}


def _value(type_str: str, value: Any, where: str) -> Any:
    for name, cls in _NESTED.items():
        if type_str == name or type_str == f"Optional[{name}]":
            return None if value is None else _build(cls, value, where)
    if type_str == "dict[str, ColumnSpec]":
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of node type -> column spec")
        return {str(k): _build(ColumnSpec, {"column": v} if isinstance(v, str) else v, f"{where}.{k}")
                for k, v in value.items()}
    if type_str == "list[BinSpec]":
        items = value if isinstance(value, list) else [value]
        return [_build(BinSpec, v, f"{where}[{i}]") for i, v in enumerate(items)]
    if type_str.startswith("list[") and not isinstance(value, list):
        return [value]
    return value
