#!/usr/bin/env bash
# Thin torchrun wrapper: N processes of `python -m graphrec_dist.train` on this machine
# (nccl on GPUs, gloo on CPU; the trainer picks).
#   launch/torchrun.sh CONFIG [key=value ...]
# Environment: NPROC (default: the GPU count, else 2), PYTHON (default: .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
NPROC=${NPROC:-$("$PY" -c "import torch; print(torch.cuda.device_count() or 2)")}
exec "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" -m graphrec_dist.train "$@"
