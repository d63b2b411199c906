# Two entry points matter: `make demo` and `make test` (see README). Both create .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned: on these machines pip takes the local CPU wheel of exactly this version.
TORCH := torch==2.13.0

.PHONY: demo test test-fast bench lint data clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[torch,demo]"
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[torch,jax,demo,test]"
	touch $@ $(VENV)/.demo-installed

$(VENV)/.bench-installed: $(VENV)/.test-installed
	$(BIN)/pip install -q -e ".[torch,jax,demo,test,bench]"
	touch $@

demo: $(VENV)/.demo-installed
	$(BIN)/lowbit dr demo

test: $(VENV)/.test-installed
	$(BIN)/ruff check src tests benchmarks experiments examples
	$(BIN)/python -m pytest -n 2 -q

test-fast: $(VENV)/.test-installed
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

bench: $(VENV)/.bench-installed
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/bench_matmul.py --markdown benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_arith.py --markdown benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_nn.py --markdown benchmarks/RESULTS.md

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests benchmarks experiments examples
	$(BIN)/ruff format --check src tests benchmarks experiments examples

data:
	@if command -v apt-get >/dev/null; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  echo "apt-get not found: download Fashion-MNIST's four *-ubyte.gz files and pass --data-dir"; \
	fi

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
