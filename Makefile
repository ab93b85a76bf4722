# hf-ingest: every target installs first (into .venv in this checkout).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_HOME ?= $(CURDIR)/.data/prefect
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export DO_NOT_TRACK ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "hf-ingest needs Python >= 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/hf-ingest make-sample .data/sample
	$(BIN)/hf-ingest run .data/sample

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf .data

.PHONY: up down
up: install
	$(BIN)/python -m deployments.stack up

down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m deployments.stack down; fi

.PHONY: bench
bench: install
	$(BIN)/python -m bench.run
