"""The old import path of the run folder's checkpoint functions, now in :mod:`graphrec_dist.run_dir`.

Kept for the callers that issue 15 is changing (export.py, serve.py, benchmarks/serving.py,
tests/test_export_serve.py); new code imports ``graphrec_dist.run_dir``.
"""
from graphrec_dist.run_dir import BEST, LAST, load_checkpoint, load_run, save_checkpoint

__all__ = ["BEST", "LAST", "load_checkpoint", "load_run", "save_checkpoint"]
