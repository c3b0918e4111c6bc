# agent-run relay: `make start` runs the app locally, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP_STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed
# The infra checkers (checkov, pycep) live in their own venv: their many pins must not
# disturb the app's dependencies.
BENCH_STAMP := $(VENV)/.bench-installed
INFRA_VENV := .venv-infra
INFRA_STAMP := $(INFRA_VENV)/.installed
# The Functions Python worker's indexing code (azure-functions-runtime: loader + Registry) for
# tests/project/test_worker_indexing.py. It declares Python >=3.13 and, for its own process, grpc and
# protobuf pins; only its pure-Python loader is needed, run by the app's .venv, so it goes into a
# folder of its own, without dependencies (the app's azure-functions is the one it indexes with).
WORKER_DIR := .venv-worker
WORKER_STAMP := $(WORKER_DIR)/.installed
# azure-functions-doctor (tests/project/test_doctor.py) has pins of its own (pydantic, typer, rich).
DOCTOR_VENV := .venv-doctor
DOCTOR_STAMP := $(DOCTOR_VENV)/.installed
AZURITE_DIR := .azurite

.PHONY: start check-core-tools services-up services-down bench test lint typecheck unit install clean

$(PIP_STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(BENCH_STAMP): $(PIP_STAMP) requirements-bench.txt
	$(PY) -m pip install --quiet -r requirements-bench.txt
	touch $@

# Benchmarks (not part of `make test`): regenerates docs/benchmarks.md and its plots.
bench: $(BENCH_STAMP)
	$(PY) -m bench

$(INFRA_STAMP): infra/requirements-checks.txt
	$(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(INFRA_VENV)/bin/python -m pip install --quiet -r infra/requirements-checks.txt
	touch $@

$(WORKER_STAMP): requirements-worker.txt $(PIP_STAMP)
	rm -rf $(WORKER_DIR)
	$(PY) -m pip install --quiet --no-deps --ignore-requires-python \
	  --target $(WORKER_DIR)/site-packages -r requirements-worker.txt
	touch $@

$(DOCTOR_STAMP): requirements-doctor.txt
	$(PYTHON) -m venv $(DOCTOR_VENV)
	$(DOCTOR_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DOCTOR_VENV)/bin/python -m pip install --quiet -r requirements-doctor.txt
	touch $@

$(NPM_STAMP): package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

install: $(PIP_STAMP) $(NPM_STAMP)

lint: $(PIP_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(PIP_STAMP)
	$(VENV)/bin/mypy function_app.py shared devhost tests bench

unit: $(PIP_STAMP) $(INFRA_STAMP) $(NPM_STAMP) $(WORKER_STAMP) $(DOCTOR_STAMP)
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

# Offline mode: when the settings point at loopback endpoints (the sample's defaults), the
# local Agents service and Event Grid topic of the test bed run beside the app.
SETTINGS ?= local.settings.json
OFFLINE_DIR ?= .offline
FUNCTIONS_PORT ?= 7071
OFFLINE_PID := $(OFFLINE_DIR)/services.pid
# Extra options for `python -m devhost.offline` (e.g. --agent-seconds slow-echo=10).
OFFLINE_ARGS ?=

services-up: $(PIP_STAMP) $(SETTINGS)
	@mkdir -p $(OFFLINE_DIR)
	@if [ -f $(OFFLINE_PID) ] && kill -0 $$(cat $(OFFLINE_PID)) 2>/dev/null; then \
	  echo "offline services already running (pid $$(cat $(OFFLINE_PID)))"; exit 0; fi; \
	rm -f $(OFFLINE_DIR)/services.json; \
	$(PY) -m devhost.offline --settings $(SETTINGS) --state-dir $(OFFLINE_DIR) \
	  --functions-port $(FUNCTIONS_PORT) $(OFFLINE_ARGS) > $(OFFLINE_DIR)/services.log 2>&1 & \
	echo $$! > $(OFFLINE_PID); \
	for i in $$(seq 1 150); do \
	  [ -f $(OFFLINE_DIR)/services.json ] && break; \
	  kill -0 $$(cat $(OFFLINE_PID)) 2>/dev/null || { cat $(OFFLINE_DIR)/services.log >&2; rm -f $(OFFLINE_PID); exit 1; }; \
	  sleep 0.2; \
	done; \
	[ -f $(OFFLINE_DIR)/services.json ] || { echo "offline services did not start" >&2; exit 1; }; \
	cat $(OFFLINE_DIR)/services.log

services-down:
	@if [ -f $(OFFLINE_PID) ]; then \
	  pid=$$(cat $(OFFLINE_PID)); kill -TERM $$pid 2>/dev/null || true; \
	  for i in $$(seq 1 50); do kill -0 $$pid 2>/dev/null || break; sleep 0.2; done; \
	  kill -0 $$pid 2>/dev/null && kill -KILL $$pid; \
	  rm -f $(OFFLINE_PID); echo "offline services stopped"; \
	else echo "offline services are not running"; fi

# Extra Azurite options (e.g. other ports: --blobPort 20000 --queuePort 20001 --tablePort 20002).
AZURITE_ARGS ?=

# Where Core Tools (`func`) is missing, the app runs on the development host instead
# (`python -m devhost.start`: an emulation of the Functions host, on the wall clock, same port
# and routes, function keys checked; its keys and durable state in DEVHOST_DIR, kept across
# restarts like the task hub in Azurite).
DEVHOST_DIR ?= $(AZURITE_DIR)/devhost

# Azurite (npx, its shell and node) runs in a session of its own, so that stopping it stops the
# whole process group: killing npx alone left node listening. It is stopped, and the offline
# services with it, however the host ends (exit, Ctrl-C, TERM). setsid() through the venv's
# Python works where the setsid command does not exist (macOS).
start: $(PIP_STAMP) $(NPM_STAMP) $(SETTINGS)
	mkdir -p $(AZURITE_DIR)
	@set -e; \
	if command -v func >/dev/null 2>&1; then use_func=1; else use_func=; \
	  echo "Azure Functions Core Tools ('func') is not installed: running the app on the development" >&2; \
	  echo "host instead, an emulation of the Functions host for local development. For the real host:" >&2; \
	  echo "  npm install -g azure-functions-core-tools@4 --unsafe-perm true   (needs internet access)" >&2; \
	fi; \
	$(PY) -c 'import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])' \
	  npx azurite --silent --skipApiVersionCheck --location $(AZURITE_DIR) \
	  --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1 $(AZURITE_ARGS) & \
	azurite_pgid=$$!; \
	stop_azurite() { \
	  kill -TERM -- -$$azurite_pgid 2>/dev/null || return 0; \
	  for i in $$(seq 1 50); do kill -0 -- -$$azurite_pgid 2>/dev/null || break; sleep 0.1; done; \
	  kill -KILL -- -$$azurite_pgid 2>/dev/null || true; \
	  wait $$azurite_pgid 2>/dev/null || true; \
	}; \
	cleanup() { \
	  stop_azurite; \
	  $(MAKE) --no-print-directory services-down SETTINGS=$(SETTINGS) OFFLINE_DIR=$(OFFLINE_DIR); \
	}; \
	trap cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM; \
	offline=; \
	if $(PY) -c "import sys; from pathlib import Path; from devhost.offline import uses_local_services; sys.exit(0 if uses_local_services(Path('$(SETTINGS)')) else 1)"; then \
	  offline=1; webhook=; \
	  if [ -z "$$use_func" ]; then \
	    webhook="--webhook-keys $$($(PY) -m devhost.start --state-dir $(DEVHOST_DIR) --keys)"; \
	  fi; \
	  $(MAKE) --no-print-directory services-up SETTINGS=$(SETTINGS) OFFLINE_DIR=$(OFFLINE_DIR) \
	    FUNCTIONS_PORT=$(FUNCTIONS_PORT) OFFLINE_ARGS="$(OFFLINE_ARGS) $$webhook"; \
	  if [ -n "$$use_func" ]; then \
	    echo; echo "Offline mode. Submit a run (the echo agent answers in about 3 s):"; \
	    $(PY) -c "import json; print('  ' + json.load(open('$(OFFLINE_DIR)/services.json'))['curl'])"; \
	    echo "or to a Foundry echo agent (Responses API; FOUNDRY_PROJECT_ENDPOINT in $(SETTINGS)):"; \
	    $(PY) -c "import json; print('  ' + json.load(open('$(OFFLINE_DIR)/services.json')).get('foundryCurl', '(not started)'))"; \
	    echo "then GET the statusUrl it returns (with the same host), and watch this terminal for"; \
	    echo "the sample subscriber's 'AgentRunCompleted ...' line (on_agent_run_completed)."; echo; \
	  fi; \
	else echo "Using the Azure services named in $(SETTINGS)."; fi; \
	if [ -n "$$use_func" ]; then \
	  . $(VENV)/bin/activate && func start --python --port $(FUNCTIONS_PORT); \
	else \
	  $(PY) -m devhost.start --settings $(SETTINGS) --port $(FUNCTIONS_PORT) --state-dir $(DEVHOST_DIR) \
	    --exit-with $$PPID $${offline:+--services $(OFFLINE_DIR)/services.json}; \
	fi

clean:
	rm -rf $(VENV) $(INFRA_VENV) $(WORKER_DIR) $(DOCTOR_VENV) node_modules $(AZURITE_DIR) $(OFFLINE_DIR) .mypy_cache .ruff_cache .pytest_cache
