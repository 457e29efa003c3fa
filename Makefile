# All set-up happens here: a virtual environment in .venv with the package and its dev extras.
# torch is pinned to the release already on disk (a CPU build) so that no CUDA wheels are pulled.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test bench gpu-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/htsr-diag demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_spectral.py

# Every GPU measurement of issue #17 within a wall-clock budget (benchmarks/gpu/run_all.py; writes
# gpu_check.json/.md and trajectory_*.json into $OUT, else benchmarks/results/gpu).
# GPU_ARGS=--dry-run checks the script on the CPU in well under a minute. On a lent GPU machine,
# whose image has its own torch and no network (so no venv can be set up there), use its python:
#   make gpu-check GPU_PYTHON=python3 GPU_ARGS="--budget-s 400"
GPU_PYTHON ?= $(BIN)/python
GPU_ARGS   ?= --budget-s 360

gpu-check: $(if $(filter $(BIN)/python,$(GPU_PYTHON)),$(STAMP))
	$(GPU_PYTHON) benchmarks/gpu/run_all.py $(GPU_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info
