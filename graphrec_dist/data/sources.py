"""Reading raw tabular files (.csv or .csv.gz) with checks that name the file, column and line.

Every failure here is a :class:`DataError` (exit code 2) that says what to fix; nothing is written.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from graphrec_dist.errors import DataError

GOODBOOKS_FILES = ("ratings", "to_read", "books", "book_tags", "tags")


def find_file(raw_dir: str | Path, stem: str, required: bool = True) -> Path | None:
    """``raw_dir/stem.csv`` or ``raw_dir/stem.csv.gz`` (plain CSV wins when both exist)."""
    base = Path(raw_dir)
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        if (base / name).is_file():
            return base / name
    if required:
        raise DataError(f"missing input file: {base / (stem + '.csv')} (nor {stem}.csv.gz) in {base}")
    return None


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes (used for the bundle cache key and meta.json)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def read_header(path: str | Path, columns: Iterable[str] = ()) -> list[str]:
    """The file's column names; DataError if it is missing, empty, unreadable or lacks ``columns``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing input file: {path}")
    header = list(_read(path, nrows=0).columns)
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; "
                        f"found {', '.join(repr(c) for c in header)}")
    return header


def _read(path: Path, **kwargs) -> pd.DataFrame:
    """pd.read_csv with every failure turned into a DataError naming the file."""
    with _read_errors(path):
        return pd.read_csv(path, low_memory=False, **kwargs)


@contextlib.contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty (expected a header line with column names)") from None
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read the file (truncated or garbled gzip?): {exc}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: cannot parse as CSV: {exc}") from None


def read_chunks(path: str | Path, columns: Iterable[str], chunk_rows: int) -> Iterator[tuple[int, pd.DataFrame]]:
    """``read_table``'s columns in frames of at most ``chunk_rows`` rows, each with the file line
    of its first row (the header is line 1), so that checks name the right line."""
    path = Path(path)
    columns = list(columns)
    read_header(path, columns)
    line = 2
    with _read_errors(path), pd.read_csv(path, usecols=lambda c: c in columns, chunksize=chunk_rows) as reader:
        for frame in reader:
            yield line, frame[columns]
            line += len(frame)


def read_table(path: str | Path, columns: Iterable[str], int_columns: Iterable[str] = (),
               dtype: dict | None = None) -> pd.DataFrame:
    """Read ``path`` and check it has ``columns``; ``int_columns`` must be whole numbers.

    Returns only the requested columns. Raises :class:`DataError` for a missing file, an empty
    file, a missing column, a garbled gzip or a non-numeric value (with its line number).
    """
    path = Path(path)
    columns = list(columns)
    read_header(path, columns)
    frame = _read(path, dtype=dtype or {}, usecols=lambda c: c in columns)
    for col in int_columns:
        frame[col] = to_int_column(frame[col], path, col)
    return frame[columns]


def to_int_column(series: pd.Series, path: Path | str, col: str, first_line: int = 2) -> pd.Series:
    """Whole-number int64 column, or a DataError naming the first bad line (1 = header; the
    series' first row is line ``first_line``)."""
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.astype(np.int64)
    numeric = pd.to_numeric(series, errors="coerce")
    bad = numeric.isna() | (numeric != np.floor(numeric))
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}: column {col!r}, line {pos + first_line}: expected an integer id, "
                        f"got {series.iloc[pos]!r}")
    return numeric.astype(np.int64)


def check_range(series: pd.Series, lo: float, hi: float, path: Path | str, col: str, first_line: int = 2) -> None:
    """DataError naming the first line whose value lies outside [lo, hi]."""
    values = series.to_numpy()
    bad = (values < lo) | (values > hi)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: column {col!r}, line {pos + first_line}: value {values[pos].item()!r} outside "
                        f"the allowed range {lo}..{hi}")
