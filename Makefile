# Two commands on a fresh machine: `make demo` and `make test`.
# `make setup` only installs: a .venv/ in the repo with the pinned stack.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedpt-installed
# TensorFlow Federated 0.87.0 pins jax/jaxlib 0.4.14, and jaxlib 0.4.14 has no Linux
# wheel on PyPI, so TFF is installed with --no-deps on top of requirements.lock, which
# holds all of TFF's other pins with jax/jaxlib 0.4.18 in their place.
TFF_VERSION := 0.87.0

.PHONY: setup test demo lint format clean

setup: $(STAMP)

$(STAMP): requirements.lock setup.py
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; \
	  sys.exit(0 if (3, 9) <= v < (3, 12) else \
	  "tff_fedpt needs Python 3.9-3.11 (TensorFlow Federated 0.87 supports no other); found %d.%d. Set PYTHON=/path/to/python3.11." % v)'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps tensorflow-federated==$(TFF_VERSION)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: setup lint
	$(BIN)/python -m pytest tests

demo: setup
	$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) output
