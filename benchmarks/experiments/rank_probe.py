"""How much ranking quality a d-dimensional embedding model can hope for on a dataset: EASE's
item-item matrix truncated to rank k, evaluated like any model.

EASE scores ``X_u B`` with a full item x item matrix ``B``. Keeping the top k singular directions,
``B ~ U_k S_k V_k^T``, makes it an embedding model (users ``X U_k S_k``, items ``V_k``) whose scores
have rank k, like a model scored by k-dimensional embeddings. The table says how much of EASE's
quality survives each rank; where rank 64 already loses what separates a 64-dimensional model from
EASE, more dimensions are the lever (docs/TRAINING.md, round 6).

    python benchmarks/experiments/rank_probe.py BUNDLE_DIR [--ranks 16,32,64,128,256] [--lam 200]
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from graphrec_dist.config import EvalConfig
from graphrec_dist.data.bundle import Bundle
from graphrec_dist.distributed import DistContext
from graphrec_dist.errors import ConfigError, UserError
from graphrec_dist.evaluate import evaluate_scorer
from graphrec_dist.models.base import EmbeddingScorer
from graphrec_dist.models.ease import Ease, interaction_matrix


def rank_k_scorer(xu: torch.Tensor, s: torch.Tensor, vt: torch.Tensor, k: int) -> EmbeddingScorer:
    """EASE's scores ``X B`` with ``B = U S V^T`` cut to rank ``k``: users ``(X U)_k S_k``, items
    ``V_k`` (``xu``: at least the first ``k`` columns of ``X U``)."""
    return EmbeddingScorer((xu[:, :k] * s[:k]).float(), vt[:k].T.float().contiguous())


def rank_probe(bundle: Bundle, ranks: list[int], lam: float, split: str = "val",
               popularity_groups: int = 5) -> list[dict[str, Any]]:
    """Per rank in ``ranks`` (clipped to the number of items; the last row is always full rank,
    i.e. EASE itself): ``split`` metrics of EASE (``lam``) truncated to that rank, with the
    popularity breakdown."""
    ease = Ease(lam)
    ease.fit(bundle, DistContext())
    u, s, vt = torch.linalg.svd(ease.weights.double())
    energy = (s ** 2).cumsum(0) / (s ** 2).sum()
    full = bundle.num_books
    truncated = sorted({min(r, full) for r in ranks} - {full})
    # Only the columns of X U that a truncated row reads: [users, max rank], never [users, items].
    x = interaction_matrix(bundle)
    xu = torch.from_numpy(x @ u[:, :max(truncated, default=0)].numpy())
    cfg = EvalConfig()
    rows = []
    for k in truncated + [full]:
        scorer = ease.scorer(bundle, DistContext()) if k == full else rank_k_scorer(xu, s, vt, k)
        metrics = evaluate_scorer(scorer, bundle, split, cfg, DistContext(), popularity_groups=popularity_groups)
        rows.append({"rank": k, "energy": float(energy[k - 1]), **metrics})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The probe as a Markdown table: NDCG@10 overall and per popularity group, by rank."""
    groups = rows[0]["by_popularity"]
    head = ["rank", "share of B's energy", "NDCG@10"] + [
        "NDCG@10, items with {}-{} training pairs".format(*g["train_count"]) for g in groups]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["rank"]), f"{r['energy']:.3f}", f"{r['ndcg@10']:.4f}"]
        cells += [f"{g['ndcg@10']:.4f}" for g in r["by_popularity"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/experiments/rank_probe.py",
                                     description="EASE truncated to rank k: the quality a k-dimensional "
                                                 "embedding model can reach on a bundle.")
    parser.add_argument("bundle", help="a bundle directory (graphrec-dist data build)")
    parser.add_argument("--ranks", default="16,32,64,128,256", help="comma-separated ranks (default %(default)s)")
    parser.add_argument("--lam", type=float, default=200.0, help="EASE's L2 weight (default %(default)s)")
    parser.add_argument("--split", choices=["val", "test"], default="val")
    args = parser.parse_args(argv)
    from graphrec_dist.data.store import load_bundle

    try:
        try:
            ranks = [int(r) for r in args.ranks.split(",")]
        except ValueError:
            raise ConfigError(f"--ranks: expected comma-separated integers, got {args.ranks!r}") from None
        if not ranks or min(ranks) < 1 or args.lam <= 0:
            raise ConfigError(f"--ranks must be >= 1 and --lam > 0, got {args.ranks!r} and {args.lam}")
        print(markdown(rank_probe(load_bundle(args.bundle), ranks, args.lam, args.split)))
    except UserError as exc:
        print(f"rank_probe: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
