"""Model registry: ``build_model(cfg, bundle)`` picks the module for ``cfg.model.name``.

Each module exposes ``build(cfg, bundle) -> Recommender``; modules are imported on demand.
"""
from __future__ import annotations

import importlib

from graphrec_dist.models.base import Recommender

MODULES = {
    "graphsage": "graphrec_dist.models.graphsage",
    "graphsage_ui": "graphrec_dist.models.graphsage",
    "popularity": "graphrec_dist.models.popularity",
    "ease": "graphrec_dist.models.ease",
    "mf": "graphrec_dist.models.mf",
    "lightgcn": "graphrec_dist.models.lightgcn",
    "lightgcn_ui": "graphrec_dist.models.lightgcn",
    "content_knn": "graphrec_dist.models.content_knn",
}


def build_model(cfg, bundle) -> Recommender:
    """The model named by ``cfg.model.name``, built for ``bundle``'s graph."""
    module = importlib.import_module(MODULES[cfg.model.name])
    return module.build(cfg, bundle)
