"""The suite runs on the CPU on every machine: ``dist.device=auto`` would train the tests on a GPU
where there is one (other numbers, other code paths), and the 2-process tests would put their
second rank on a second GPU (``set_device(1)``) that a one-GPU machine does not have. Hiding the
GPUs here, before anything asks CUDA for its devices, covers this process and the ones the tests
start (torchrun, spawn, Ray workers inherit the environment). The GPU paths have their own check:
``make gpu-check`` (launch/gpu_check.sh)."""
import os
import sys
from pathlib import Path

os.environ["CUDA_VISIBLE_DEVICES"] = ""
# The one-off probes live outside the package (benchmarks/experiments/); their tests import them by name.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "experiments"))
