"""Model registry: ``build_model(cfg, bundle)`` picks the builder for ``cfg.model.name``.

Each model module exposes ``build(cfg, bundle) -> Recommender``.
"""
from __future__ import annotations

from graphrec_dist.models import content_knn, ease, ease_content, graphsage, lightgcn, mf, popularity, rp3beta
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
    "rp3beta": rp3beta.build,
    "ease_content": ease_content.build,
}


# Models fitted once, without gradient steps (Recommender.kind == "closed_form"): seconds to fit, so
# the bench tunes them on every split (tests/test_baselines.py checks this against the classes).
CLOSED_FORM_MODELS = frozenset({"popularity", "ease", "ease_content", "rp3beta", "content_knn"})


def build_model(cfg, bundle) -> Recommender:
    """The model named by ``cfg.model.name``, built for ``bundle``'s graph."""
    return BUILDERS[cfg.model.name](cfg, bundle)
