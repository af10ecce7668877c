"""Scores for users graphsage was not trained on: their history folded in through the trained layers.

:class:`NewUserInference` is a mixin of :class:`graphrec_dist.models.graphsage.GraphSAGERecommender`:
it reads the model's ``encoder``, ``aggr``, ``embed_all`` (and the layer inputs it keeps) and
``_scorer``, and trains nothing.
"""
from __future__ import annotations

import torch

from graphrec_dist.data.bundle import BOOK, REV_RATES, USER, Bundle
from graphrec_dist.distributed import DistContext
from graphrec_dist.models.base import EmbeddingScorer
from graphrec_dist.models.paths import PathScorer
from graphrec_dist.models.sage_encoder import adjacency


class NewUserInference:
    """New users scored from a given history (fold-in), for a model done training."""


    scores_new_users = True

    def freeze_inference(self, bundle: Bundle) -> None:
        """Keep one whole-graph inference for :meth:`history_scorer` to fold new users into, so a
        served model answers each new user with the fold-in alone (for a model done training)."""
        self._frozen = None
        self._frozen = (self.embed_all(bundle, DistContext()), list(self._layer_inputs))

    @torch.no_grad()
    def history_scorer(self, bundle: Bundle, history: tuple, ctx) -> EmbeddingScorer | PathScorer:
        """Users scored from ``history`` (indptr, items) as new users: nothing is trained.

        Fold-in: each user starts from the new-node input and passes through the same layers with
        the history books as its only neighbours, reading every other node's layer inputs from the
        bundle's graph (the history does not change the books). For a bundle user without
        attribute edges, in a model without per-user id embeddings, that is exactly the
        computation of :meth:`embed_all`, so the scores agree with :meth:`scorer`'s.
        """
        if self._frozen is not None:
            out, layer_inputs = self._frozen
        else:
            out = self.embed_all(bundle, ctx)
            layer_inputs = self._layer_inputs
        device = out[BOOK].device
        indptr, items = (torch.as_tensor(a, dtype=torch.int64) for a in history)
        n = len(indptr) - 1
        users = torch.repeat_interleave(torch.arange(n), indptr[1:] - indptr[:-1])
        hist_edges = torch.stack([items, users]).to(device)  # book -> new user
        h = self.encoder.new_node_input(USER, n).to(device)
        for i, x in enumerate(layer_inputs):
            x = {**x, USER: h}
            adj = {}
            for et in self.encoder.layer_types[i]:
                num_src, num_dst = x[et[0]].size(0), x[et[2]].size(0)
                ei = hist_edges if et == REV_RATES else hist_edges.new_zeros(2, 0)
                adj[et] = adjacency(ei, None, num_src, num_dst, aggr=self.aggr)
            h = self.encoder.layer(i, x, adj, {})[USER]
        return self._scorer(h, out[BOOK], (indptr, items))
