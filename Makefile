# agent-run relay: `make start` runs the app locally, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP_STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed
# The infra checkers (checkov, pycep) live in their own venv: their many pins must not
# disturb the app's dependencies.
INFRA_VENV := .venv-infra
INFRA_STAMP := $(INFRA_VENV)/.installed
AZURITE_DIR := .azurite

.PHONY: start check-core-tools test lint typecheck unit install clean

$(PIP_STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(INFRA_STAMP): infra/requirements-checks.txt
	$(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(INFRA_VENV)/bin/python -m pip install --quiet -r infra/requirements-checks.txt
	touch $@

$(NPM_STAMP): package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

install: $(PIP_STAMP) $(NPM_STAMP)

lint: $(PIP_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(PIP_STAMP)
	$(VENV)/bin/mypy function_app.py shared tests

unit: $(PIP_STAMP) $(INFRA_STAMP) $(NPM_STAMP)
	$(PY) -m pytest

test: lint typecheck unit

local.settings.json:
	cp local.settings.sample.json local.settings.json
	@echo "created local.settings.json from local.settings.sample.json"

check-core-tools:
	@if ! command -v func >/dev/null 2>&1; then \
	  echo "error: Azure Functions Core Tools ('func') is not installed, so the app cannot start here." >&2; \
	  echo "Install Core Tools v4, then run 'make start' again:" >&2; \
	  echo "  npm install -g azure-functions-core-tools@4 --unsafe-perm true" >&2; \
	  echo "  (or see https://learn.microsoft.com/azure/azure-functions/functions-run-local)" >&2; \
	  echo "Its npm package downloads the host binary while installing, so it needs internet access." >&2; \
	  exit 1; \
	fi

start: check-core-tools $(PIP_STAMP) $(NPM_STAMP) local.settings.json
	mkdir -p $(AZURITE_DIR)
	npx azurite --silent --skipApiVersionCheck --location $(AZURITE_DIR) --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1 & \
	  azurite_pid=$$!; trap 'kill $$azurite_pid 2>/dev/null' EXIT INT TERM; \
	  source $(VENV)/bin/activate && func start --python

clean:
	rm -rf $(VENV) $(INFRA_VENV) node_modules $(AZURITE_DIR) .mypy_cache .ruff_cache .pytest_cache
