"""Train on Ray workers: ``python launch/ray_train.py CONFIG [key=value ...]``.

The same as ``graphrec-dist train CONFIG --launcher ray``, meant as the entrypoint of
``ray job submit --address ... --working-dir . -- python launch/ray_train.py configs/X.yaml ...``.
"""
import sys

from graphrec_dist.errors import UserError
from graphrec_dist.train import main

if __name__ == "__main__":
    try:
        main([*sys.argv[1:], "--launcher", "ray"])
    except UserError as exc:
        print(f"launch/ray_train.py: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
