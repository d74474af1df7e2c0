# Two commands for a fresh machine (Python >= 3.11, no GPU needed):
#   make demo   – set up .venv if needed, then run the main job on the shipped default model
#                 (replacing demo-output/ of an earlier make demo)
#   make test   – set up .venv if needed, then run the default test suite
# torch is pinned to the CPU build first so that no multi-GB CUDA build is pulled;
# on a GPU machine use `make install TORCH="torch"` (or install your CUDA torch first).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sbicluster-installed

.PHONY: install demo test test-all lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sbicluster demo --out demo-output --overwrite

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m "slow or not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check sbicluster simulators tests benchmarks
	$(VENV)/bin/ruff format --check sbicluster simulators tests benchmarks

clean:
	rm -rf $(VENV) demo-output .pytest_cache
