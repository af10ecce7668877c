"""Child-process entry of the benchmark suite: ``python -m graphrec_dist.benchmarks.child
module:function ARGS.json OUT.json`` calls ``function(**args)`` and writes its dict result.

The parent (:func:`graphrec_dist.benchmarks.common.call_in_child`) reads the child's peak RSS
from ``os.wait4``, so each heavy stage is measured alone in a fresh process.
"""
from __future__ import annotations

import importlib
import json
import sys

from graphrec_dist.io_utils import write_json_atomic
from graphrec_dist.logging_utils import setup_logging


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 3 or ":" not in argv[0]:
        print("usage: python -m graphrec_dist.benchmarks.child module:function ARGS.json OUT.json", file=sys.stderr)
        return 2
    target, args_path, out_path = argv
    module_name, func_name = target.split(":", 1)
    setup_logging(0, "INFO")
    func = getattr(importlib.import_module(module_name), func_name)
    with open(args_path) as fh:
        kwargs = json.load(fh)
    result = func(**kwargs)
    write_json_atomic(out_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
