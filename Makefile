# mlrepo developer entry points. A newcomer needs two: `make run` and `make test`.
# Every target is idempotent: the virtualenv is rebuilt only when pyproject.toml changes (stamp file),
# and scripts/test-services.sh installs system packages only when they are missing.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mlrepo-installed
# torch first, pinned to its CPU build: PyPI's Linux torch is the CUDA build whatever the version pin, with
# multi-GB nvidia-* dependencies (sentence-transformers would pull it too). The CPU build comes from the
# configured indexes and local wheels when they hold it (no detour to an index that may be unreachable:
# pip retries it for every dependency), else from PyTorch's CPU index, else (macOS, whose wheels carry no
# +cpu label) the plain pin.
TORCH_VERSION := 2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
define install_torch
$(1) install "torch==$(TORCH_VERSION)+cpu" \
	  || $(1) install "torch==$(TORCH_VERSION)+cpu" --extra-index-url $(TORCH_INDEX) \
	  || $(1) install "torch==$(TORCH_VERSION)"
endef
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
BENCH_ARGS ?=

# The embedding model ships inside a Python package; never reach for a model hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install lock run migrate seed serve test services lint format bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(call install_torch,$(BIN)/pip)
	$(BIN)/pip install -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)

## Re-resolve every dependency from pyproject.toml in a throwaway venv and pin the result in
## constraints.txt: installs (and CI on a clean checkout) then get the versions the suite last passed
## with, not whatever PyPI published since. Run it when changing dependencies, then run `make test`.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(call install_torch,$(LOCK_VENV)/bin/pip)
	$(LOCK_VENV)/bin/pip install -e '.[dev]'
	{ sed -n '/^#/p' constraints.txt; \
	  $(LOCK_VENV)/bin/pip freeze --exclude-editable | sed 's/^\(torch==[^+]*\)+.*/\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)

migrate: install
	$(BIN)/mlrepo migrate

seed: migrate
	$(BIN)/mlrepo seed

serve: install
	$(BIN)/mlrepo serve --host $(HOST) --port $(PORT)

## Create the venv, migrate, seed the demo catalog and serve GraphQL on http://$(HOST):$(PORT)/graphql
run: install
	$(BIN)/mlrepo migrate
	$(BIN)/mlrepo seed
	$(BIN)/mlrepo serve --host $(HOST) --port $(PORT)

## Install what the tests need (redis, bubblewrap, ...), then run the whole suite.
test: install services
	$(BIN)/pytest $(PYTEST_ARGS)

services:
	scripts/test-services.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Search latency at 1k/10k/100k listings (BENCH_ARGS="--sizes 1000,10000" for a quick run).
bench: install
	$(BIN)/python -m benchmarks.search_latency $(BENCH_ARGS)

## Regenerate README's configuration table and CLI reference, and docs/schema.graphql, from the code.
docs: install
	$(BIN)/python scripts/gen_docs.py

clean:
	rm -rf $(VENV) var/bench .pytest_cache .ruff_cache
