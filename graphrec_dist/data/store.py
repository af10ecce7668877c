"""Bundle on disk: .npy arrays, CSV tables and JSON, byte-for-byte reproducible and read-only to load.

Layout of a bundle directory::

    meta.json                      schema, recipe config + hash, input checksums, counts
    graph/<src__rel__dst>.edge_index.npy   int64 [2, E]
    graph/<src__rel__dst>.edge_weight.npy  float32 [E]
    splits/{train,val,test}.npy    int64 [n, 2] (user, book)
    splits/cold_*.npy              the inductive protocols' pairs, and cold_items.npy int64 [n]
                                   (absent from bundles built before them: read as empty)
    books.csv, users.csv           one row per node index (original ids, titles, authors)
    vocab/<node type>.json         the label of each node of a side type (tag id, author, ...)

No zip or pickle is involved (their timestamps and memo ids would break reproducibility).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import HeteroData

from graphrec_dist.data.bundle import COLD_SPLITS, Bundle, edge_key
from graphrec_dist.errors import DataError
from graphrec_dist.io_utils import atomic_dir

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


class NpyWriter:
    """An .npy file of a known shape, written piece by piece at element offsets of its C-order
    data, so that an array nobody holds whole is saved with the bytes ``np.save`` would write."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = np.dtype(dtype)
        self._fh = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": tuple(int(n) for n in shape)}
        np.lib.format.write_array_header_1_0(self._fh, header)
        self._base = self._fh.tell()
        self._fh.truncate(self._base + int(np.prod(shape, dtype=np.int64)) * self.dtype.itemsize)

    def write(self, offset: int, values: np.ndarray) -> None:
        self._fh.seek(self._base + int(offset) * self.dtype.itemsize)
        self._fh.write(np.ascontiguousarray(values, dtype=self.dtype).data)

    def close(self) -> None:
        self._fh.close()


def write_bundle_dir(out: Path, edges: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]],
                     splits: dict[str, np.ndarray], books: pd.DataFrame, users: pd.DataFrame,
                     vocab: dict[str, list[str]], meta: dict[str, Any], on_disk: tuple[str, ...] = ()) -> None:
    """Write a bundle into ``out`` (an existing, empty directory; the caller renames it into place).

    ``on_disk``: names of splits whose file the caller has already written (a streamed build)."""
    for etype, (edge_index, weight) in sorted(edges.items()):
        _save_npy(out / "graph" / f"{edge_key(etype)}.edge_index.npy", edge_index.astype(np.int64))
        _save_npy(out / "graph" / f"{edge_key(etype)}.edge_weight.npy", weight.astype(np.float32))
    for name in (s for s in SPLITS + COLD_SPLITS if s not in on_disk):
        pairs = splits.get(name, np.zeros((0, 2), dtype=np.int64))
        _save_npy(out / "splits" / f"{name}.npy", pairs.astype(np.int64).reshape(-1, 2))
    _save_npy(out / "splits" / "cold_items.npy", np.asarray(splits.get("cold_items", []), dtype=np.int64))
    books.to_csv(out / "books.csv", index=False, lineterminator="\n")
    users.to_csv(out / "users.csv", index=False, lineterminator="\n")
    (out / "vocab").mkdir(exist_ok=True)
    for ntype, labels in sorted(vocab.items()):
        (out / "vocab" / f"{ntype}.json").write_text(json.dumps(labels, ensure_ascii=False) + "\n")
    (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def save_bundle(bundle: Bundle, path: str | Path, vocab: dict[str, list[str]] | None = None) -> Path:
    """Write an in-memory :class:`Bundle` atomically to ``path`` (counts in meta.json recomputed).

    For bundles made in code (tests, other tools); the builder writes its own via ``write_bundle_dir``.
    """
    path = Path(path)
    g = bundle.graph
    edges = {e: (g[e].edge_index.numpy(), g[e].edge_weight.numpy()) for e in g.edge_types}
    splits = {s: bundle.split(s).numpy() for s in SPLITS + COLD_SPLITS}
    splits["cold_items"] = bundle.cold_items.numpy()
    meta = dict(bundle.meta)
    meta.setdefault("schema_version", SCHEMA_VERSION)
    meta["counts"] = {"num_nodes": {t: int(g[t].num_nodes) for t in sorted(g.node_types)},
                      "num_edges": {edge_key(e): int(v[0].shape[1]) for e, v in sorted(edges.items())},
                      "splits": {s: int(v.shape[0]) for s, v in splits.items() if len(v) or s in SPLITS}}
    with atomic_dir(path) as tmp:
        write_bundle_dir(tmp, edges, splits, bundle.books, bundle.users, vocab or {}, meta)
    return path


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """The bundle's meta.json, or None when there is no readable one."""
    try:
        return json.loads((Path(path) / "meta.json").read_text())
    except (OSError, ValueError):
        return None


REBUILD = "rebuild it with 'graphrec-dist data build <the config it was built from> --force'"


def read_meta_strict(path: Path) -> dict[str, Any]:
    """meta.json as a dict, or a DataError that tells a missing bundle from a garbled meta.json."""
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise DataError(f"no bundle at {path} ({meta_file} is missing); build it with 'graphrec-dist data build'")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"bundle {path}: {meta_file} is garbled ({exc}); {REBUILD}") from None
    if not isinstance(meta, dict):
        raise DataError(f"bundle {path}: {meta_file} is garbled (not a JSON object); {REBUILD}")
    return meta


def _load_npy(file: Path) -> torch.Tensor:
    """One array of a bundle; a missing, truncated or garbled file is a DataError naming it."""
    try:
        return torch.from_numpy(np.load(file, allow_pickle=False))
    except FileNotFoundError:
        raise DataError(f"bundle {file.parent.parent}: {file} is missing; {REBUILD}") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"bundle {file.parent.parent}: {file} is truncated or garbled ({exc}); {REBUILD}") from None


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle directory; reads only (safe on every rank at once while nothing rebuilds it)."""
    path = Path(path)
    meta = read_meta_strict(path)
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"bundle {path} has schema version {meta.get('schema_version')!r}; this code "
                        f"reads version {SCHEMA_VERSION}: {REBUILD}")
    try:
        graph = HeteroData()
        for ntype, n in meta["counts"]["num_nodes"].items():
            graph[ntype].num_nodes = int(n)
        for key in meta["counts"]["num_edges"]:
            etype = tuple(key.split("__"))
            graph[etype].edge_index = _load_npy(path / "graph" / f"{key}.edge_index.npy")
            graph[etype].edge_weight = _load_npy(path / "graph" / f"{key}.edge_weight.npy")
        splits = {s: _load_npy(path / "splits" / f"{s}.npy") for s in SPLITS}
        cold = {s: _load_npy(path / "splits" / f"{s}.npy")
                for s in COLD_SPLITS + ("cold_items",) if (path / "splits" / f"{s}.npy").exists()}
        # Titles and authors stay text (a title "1984" is not a number; an empty author is "").
        books = pd.read_csv(path / "books.csv", keep_default_na=False, dtype={"title": str, "authors": str})
        users = pd.read_csv(path / "users.csv")
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise DataError(f"bundle {path} is incomplete or corrupt ({type(exc).__name__}: {exc}); {REBUILD}") from None
    return Bundle(graph=graph, train=splits["train"], val=splits["val"], test=splits["test"],
                  books=books, users=users, meta=meta, path=path, cold=cold)


def load_vocab(path: str | Path, ntype: str) -> list[str]:
    """Labels of the nodes of a side type (e.g. tag ids, author names) of a saved bundle."""
    return json.loads((Path(path) / "vocab" / f"{ntype}.json").read_text())
