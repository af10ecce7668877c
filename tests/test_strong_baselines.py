"""The baselines that are hard to beat: rp3beta, EASE's dropout generalisation (EDLAE) and
ease_content, each against its formula computed directly with numpy; and the registry's list of
closed-form models against the models themselves."""
from __future__ import annotations

import numpy as np
import torch
from test_baselines import _bundle, _cfg, _ease_by_numpy, _random_bundle

from graphrec_dist.data.bundle import SIMILAR
from graphrec_dist.distributed import DistContext
from graphrec_dist.models import BUILDERS, CLOSED_FORM_MODELS, build_model
from graphrec_dist.models.ease import interaction_matrix
from graphrec_dist.models.fit_cache import cached, fit_cache

CTX = DistContext()


def _dense(bundle) -> np.ndarray:
    return interaction_matrix(bundle).toarray().astype(np.float64)


def test_rp3beta_matches_the_random_walk_formula_and_keeps_each_targets_top_k() -> None:
    bundle = _random_bundle(num_users=30, num_books=12, per_user=5)
    x = _dense(bundle)
    alpha, beta = 0.7, 0.4
    p_ui = (x / x.sum(1, keepdims=True)) ** alpha
    p_iu = (x.T / np.maximum(x.sum(0), 1)[:, None]) ** alpha
    w = (p_iu @ p_ui) / np.maximum(x.sum(0), 1)[None, :] ** beta
    np.fill_diagonal(w, 0.0)
    users = torch.arange(30)
    full = build_model(_cfg("rp3beta", **{"rp3.alpha": alpha, "rp3.beta": beta, "rp3.top_k": 12}), bundle)
    full.fit(bundle, CTX)
    assert np.allclose(full.scorer(bundle, CTX).scores(users).numpy(), x @ w, atol=1e-5)
    k = 4
    model = build_model(_cfg("rp3beta", **{"rp3.alpha": alpha, "rp3.beta": beta, "rp3.top_k": k}), bundle)
    model.fit(bundle, CTX)
    for j in range(12):  # target j keeps k sources, none lighter than a source it dropped
        kept = set(model.sources[j].tolist())
        assert len(kept) == k
        assert np.allclose(sorted(model.weights[j].tolist()), sorted(w[list(kept), j]), atol=1e-6)
        assert min(w[list(kept), j]) >= max(np.delete(w[:, j], list(kept))) - 1e-9
    kept_w = np.zeros_like(w)
    for j in range(12):
        kept_w[model.sources[j].numpy(), j] = model.weights[j].numpy()
    scores = model.scorer(bundle, CTX).scores(users)
    assert np.allclose(scores.numpy(), x @ kept_w, atol=1e-5)
    fresh = build_model(_cfg("rp3beta", **{"rp3.top_k": k}), bundle)  # a checkpoint restores the weights
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.scorer(bundle, CTX).scores(users), scores)


def _edlae_by_numpy(x: np.ndarray, lam: float, p: float) -> np.ndarray:
    g = x.T @ x
    inv = np.linalg.inv(g + lam * np.eye(len(g)) + p / (1 - p) * np.diag(np.diag(g)))
    b = np.eye(len(g)) - inv @ np.diag(1.0 / np.diag(inv))
    np.fill_diagonal(b, 0.0)
    return b


def test_ease_dropout_is_edlae_and_zero_is_ease() -> None:
    bundle = _random_bundle(num_users=30, num_books=11, per_user=4)
    x = _dense(bundle)
    for p in (0.0, 0.3):
        model = build_model(_cfg("ease", ease_lambda=5.0, ease_dropout=p), bundle)
        model.fit(bundle, CTX)
        assert np.allclose(model.weights.numpy(), _edlae_by_numpy(x, 5.0, p), atol=1e-5)
    assert np.allclose(_edlae_by_numpy(x, 5.0, 0.0), _ease_by_numpy(x, 5.0))
    assert not np.allclose(_edlae_by_numpy(x, 5.0, 0.3), _ease_by_numpy(x, 5.0), atol=1e-3)


def _with_similar(bundle, edges: list[tuple[int, int, float]]):
    g = bundle.graph
    g[SIMILAR].edge_index = torch.tensor([[a for a, _, _ in edges], [b for _, b, _ in edges]], dtype=torch.long)
    g[SIMILAR].edge_weight = torch.tensor([w for _, _, w in edges])
    return bundle


def test_ease_content_is_ease_plus_the_normalised_text_similarity_of_the_history() -> None:
    # book 5 has no training interaction (a cold item): only the text part can score it
    pairs = [(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 2), (2, 3), (3, 3), (3, 4), (3, 1)]
    bundle = _with_similar(_bundle(pairs, num_users=4, num_books=6), [(0, 5, 0.5), (3, 5, 0.25), (1, 4, 0.8)])
    x = _dense(bundle)
    s = np.zeros((6, 6))
    s[0, 5], s[3, 5], s[1, 4] = 0.5, 0.25, 0.8
    w, a = 0.3, 0.5
    expected = x @ _ease_by_numpy(x, 2.0) + w * (x.sum(1, keepdims=True) ** -a) * (x @ s)
    model = build_model(_cfg("ease_content", ease_lambda=2.0, **{"content.weight": w, "content.norm": a}), bundle)
    model.fit(bundle, CTX)
    scores = model.scorer(bundle, CTX).scores(torch.arange(4)).numpy()
    assert np.allclose(scores, expected, atol=1e-5)
    assert scores[0, 5] > 0 and scores[1, 5] == 0  # user 0 read book 0, similar to the cold book 5
    history = (np.array([0, 1]), np.array([3]))  # a new user who read book 3 only
    new = model.history_scorer(bundle, history, CTX).scores(torch.tensor([0])).numpy()
    assert np.isclose(new[0, 5], w * 0.25) and np.allclose(new[0, :5], _ease_by_numpy(x, 2.0)[3, :5], atol=1e-5)


def test_the_registrys_closed_form_models_are_the_models_fitted_once() -> None:
    bundle = _with_similar(_random_bundle(), [(0, 1, 0.5)])
    kinds = {name: build_model(_cfg(name), bundle).kind for name in BUILDERS}
    assert CLOSED_FORM_MODELS == {name for name, kind in kinds.items() if kind == "closed_form"}


def test_the_fit_cache_keeps_results_only_inside_its_block() -> None:
    calls = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    assert cached("k", compute) == 1 and cached("k", compute) == 2  # outside: always computed
    with fit_cache(max_entries=1):
        assert cached("k", compute) == 3 and cached("k", compute) == 3
        cached("other", compute)  # evicts "k"
        assert cached("k", compute) == 5
    assert cached("k", compute) == 6
