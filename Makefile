# graphrec_dist: `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv and install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# This machine's CPU build of torch; GPU users install their CUDA torch into .venv first (README).
TORCH_SPEC ?= torch==2.13.0
# Prebuilt torch-scatter/torch-sparse wheels, used as a cache when the folder exists.
WHEELS ?= ../shared/wheels
FIND_LINKS := $(if $(wildcard $(WHEELS)/*.whl),--find-links $(WHEELS),)
CORE_STAMP := $(VENV)/.installed-core
STAMP := $(VENV)/.installed
DEMO_CONFIG ?= configs/demo.yaml

.PHONY: install install-core demo test test-fast gpu-check bench bench-full clean help

help:
	@echo "make demo   - install the core, generate the embedded dataset, build Graph3, train, print test metrics"
	@echo "make test   - install everything (Ray, pytest, ruff, indexes), run the whole test suite"
	@echo "make bench  - install everything, run the reduced benchmark suite"
	@echo "make gpu-check - on a machine with one CUDA GPU: every GPU code path at debug size (~4 min)"

# What `graphrec-dist train` needs: torch, the sampling backend, the package with its core
# dependencies. The demo installs only this; Ray, the test tools, the top-k indexes and TensorBoard
# (~100 s more) come with `make install`.
$(CORE_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	$(PIP) install setuptools wheel
	# Sampling backend: pyg-lib if the user installed it, else torch-scatter + torch-sparse
	# (built from PyPI sources, ~15 min on 2 cores, unless $(WHEELS) holds matching wheels).
	$(PY) -c "import pyg_lib" 2>/dev/null || $(PY) -c "import torch_sparse, torch_scatter" 2>/dev/null || \
	  $(PIP) install --no-build-isolation $(FIND_LINKS) "torch-scatter>=2.1" "torch-sparse>=0.6.17"
	$(PIP) install -e .
	touch $(CORE_STAMP)

$(STAMP): $(CORE_STAMP)
	$(PIP) install -e '.[ray,dev,index,tensorboard]'
	touch $(STAMP)

install-core: $(CORE_STAMP)

install: $(STAMP)

demo: install-core
	$(VENV)/bin/graphrec-dist train $(DEMO_CONFIG)

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q -ra

test-fast: install
	$(PY) -m pytest -q -m "not slow and not multiproc"

# The test suite runs on the CPU everywhere (tests/conftest.py); this runs the GPU paths, with a
# CUDA torch (and Ray) in .venv. Logs under gpu_check_logs/; exit 2 when there is no GPU.
gpu-check: install
	PYTHON=$(PY) launch/gpu_check.sh

bench: install
	$(VENV)/bin/graphrec-dist bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

bench-full: install
	$(VENV)/bin/graphrec-dist bench --full
