"""Which files and columns feed the Graph3 builder: the Goodbooks preset and bring-your-own-data specs.

A :class:`SourceSpec` names an interactions file (user, item, optional rating, optional timestamp),
optional extra all-positive interactions (Goodbooks' to_read), an item-metadata file whose chosen
columns become node types, an optional item-tag file with counts, an optional text for TF-IDF
similarity and an optional numeric column binned into a node type. Goodbooks is one preset.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from graphrec_dist.config import read_yaml
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
    """An item-metadata column that becomes a node type (one node per distinct value)."""

    column: str
    sep: Optional[str] = None  # multi-valued cells, e.g. "|" for "Comedy|Drama"
    missing: Optional[str] = None  # label for empty cells (None: such items get no edge)
    relation: Optional[str] = None  # edge name; default has_<node type>


@dataclass
class BinSpec:
    """A numeric item column binned into a node type: bins (-inf,e0], (e0,e1], ...; rest -> unknown."""

    column: str
    node_type: str = "year_bin"
    edges: list[float] = field(default_factory=lambda: [1950, 1970, 1990, 2005, 2015, 2030])
    labels: list[str] = field(default_factory=lambda: ["<=1950", "1951-1970", "1971-1990", "1991-2005",
                                                       "2006-2015", "2016+", "unknown"])
    relation: Optional[str] = None


@dataclass
class ItemsSpec:
    file: str
    id: str = "item_id"
    title: Optional[str] = None  # shown by `recommend`; defaults to the id
    authors: Optional[str] = None  # shown by `recommend` (a column name), if any
    key: Optional[str] = None  # column the item-tag file refers to (default: id)
    columns: dict[str, ColumnSpec] = field(default_factory=dict)  # node type -> column
    text: list[str] = field(default_factory=list)  # columns joined by " " for TF-IDF similarity
    bin: Optional[BinSpec] = None


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
    extra_files: list[str] = field(default_factory=list)  # also checksummed (e.g. tags.csv)


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
            bin=BinSpec("original_publication_year", relation="published_in")),
        item_tags=ItemTagsSpec("book_tags", item="goodreads_book_id", tag="tag_id", count="count",
                               relation="has_tag"),
        extra_files=["tags"],
    )


def load_spec(path: str | Path) -> SourceSpec:
    """Read a bring-your-own-data spec YAML; unknown or missing keys raise ConfigError naming them."""
    return _build(SourceSpec, read_yaml(path, "csv spec file"), f"{path}")


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
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


_NESTED = {"InteractionsSpec": InteractionsSpec, "ItemsSpec": ItemsSpec, "ItemTagsSpec": ItemTagsSpec,
           "BinSpec": BinSpec, "ColumnSpec": ColumnSpec}


def _value(type_str: str, value: Any, where: str) -> Any:
    for name, cls in _NESTED.items():
        if type_str == name or type_str == f"Optional[{name}]":
            return None if value is None else _build(cls, value, where)
    if type_str == "dict[str, ColumnSpec]":
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of node type -> column spec")
        return {str(k): _build(ColumnSpec, {"column": v} if isinstance(v, str) else v, f"{where}.{k}")
                for k, v in value.items()}
    if type_str.startswith("list[") and not isinstance(value, list):
        return [value]
    return value
