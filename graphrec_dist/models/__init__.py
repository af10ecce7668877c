"""Model registry: ``build_model(cfg, bundle)`` picks the builder for ``cfg.model.name``.

Each model module exposes ``build(cfg, bundle) -> Recommender``.
"""
from __future__ import annotations

from graphrec_dist.models import content_knn, ease, graphsage, lightgcn, mf, popularity
from graphrec_dist.models.base import Recommender

BUILDERS = {
    "graphsage": graphsage.build,
    "graphsage_ui": graphsage.build,
    "popularity": popularity.build,
    "ease": ease.build,
    "mf": mf.build,
    "lightgcn": lightgcn.build,
    "lightgcn_ui": lightgcn.build,
    "content_knn": content_knn.build,
}


def build_model(cfg, bundle) -> Recommender:
    """The model named by ``cfg.model.name``, built for ``bundle``'s graph."""
    return BUILDERS[cfg.model.name](cfg, bundle)
