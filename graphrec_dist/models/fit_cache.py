"""A memo for the closed-form fits that the points of one grid search share.

``graphrec-dist tune`` trains every point of a grid in one process. For EASE and its variants, the
points differ only in lambda (and dropout, and the content blend's weights), yet each would rebuild
the same Gram matrix and re-solve the same system: inside ``with fit_cache():`` those results are
kept (keyed by the bundle's content hash and the values they depend on) and reused. Outside it,
nothing is kept, so an ordinary run holds no extra memory.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Optional

_ACTIVE: Optional[OrderedDict[Hashable, Any]] = None
_MAX_ENTRIES = 4


@contextlib.contextmanager
def fit_cache(max_entries: int = 4) -> Iterator[None]:
    """Keep up to ``max_entries`` fitted values (least recently used dropped first) while inside."""
    global _ACTIVE, _MAX_ENTRIES
    before, before_max = _ACTIVE, _MAX_ENTRIES
    _ACTIVE, _MAX_ENTRIES = OrderedDict(), max_entries
    try:
        yield
    finally:
        _ACTIVE, _MAX_ENTRIES = before, before_max


def active() -> bool:
    """Whether results are being kept (inside :func:`fit_cache`)."""
    return _ACTIVE is not None


def cached(key: Hashable, compute: Callable[[], Any]) -> Any:
    """``compute()``, or its earlier result for ``key`` inside :func:`fit_cache`. Callers must not
    modify what they get back in place."""
    if _ACTIVE is None:
        return compute()
    if key in _ACTIVE:
        _ACTIVE.move_to_end(key)
        return _ACTIVE[key]
    value = compute()
    _ACTIVE[key] = value
    while len(_ACTIVE) > _MAX_ENTRIES:
        _ACTIVE.popitem(last=False)
    return value
