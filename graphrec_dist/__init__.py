"""graphrec_dist: distributed heterogeneous-graph GNN recommender (Graph3 over Goodbooks-10k)."""

__version__ = "0.1.0"
