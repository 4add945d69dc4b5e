# vidinsight: the commands a person (and CI) runs. Each target installs what it needs first.
#
#   make demo     install, start the local stack, run the demo
#   make test     install, lint, type-check, then pytest against the local stack
#   make soak     the full fault soak (tests/faults/): a report under bench/results/ [SEED=n]
#   make up | down | status | logs [SERVICE=kafka] | install | lint
#
# VI_STATE_DIR moves the local stack's state (default .state); VI_LOCAL_STACK=0 makes
# `make test` use the services named by VI_KAFKA_BOOTSTRAP, VI_REGISTRY_URL and
# VI_DATABASE_URL without starting the local stack.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Python 3.11: python3.11 on PATH, else python3 when that is 3.11.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell command -v python3.11 2>/dev/null || \
	(python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null && command -v python3))
endif
VENV := .venv
STATE_DIR := $(or $(VI_STATE_DIR),.state)
INSTALL_STAMP := $(STATE_DIR)/install.stamp
STACK := deploy/local/stack.sh
VI_LOCAL_STACK ?= 1
PYTEST_ARGS ?=
SERVICE ?=

# litellm fetches its price map from the internet at import unless told not to.
export LITELLM_LOCAL_MODEL_COST_MAP := True
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install up down status logs lint test demo soak

help:
	@sed -n '2,11p' Makefile | sed 's/^# \{0,1\}//'

# The virtualenv, from the hashed lock only (no resolver at install time). The stamp holds
# the checksum of requirements.lock and pyproject.toml, so a second run takes no time.
install:
	@want="$$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"; \
	have="$$(cat $(INSTALL_STAMP) 2>/dev/null || true)"; \
	if [ -x $(VENV)/bin/python ] && [ "$$want" = "$$have" ]; then exit 0; fi; \
	if [ ! -x $(VENV)/bin/python ]; then \
		[ -n "$(PYTHON)" ] || { echo "make: error: Python 3.11 not found; install it or run make PYTHON=/path/to/python3.11" >&2; exit 1; }; \
		echo "install: creating $(VENV) with $(PYTHON)"; \
		$(PYTHON) -m venv $(VENV); \
	fi; \
	echo "install: installing requirements.lock into $(VENV) (hashes checked)"; \
	$(VENV)/bin/python -m pip install -q --require-hashes --no-deps -r requirements.lock; \
	$(VENV)/bin/python -m pip install -q --no-deps --no-build-isolation -e .; \
	$(VENV)/bin/python -m pip check; \
	mkdir -p $(STATE_DIR); \
	echo "$$want" > $(INSTALL_STAMP)

up: install
	@$(STACK) up

down:
	@$(STACK) down

status:
	@$(STACK) status

logs:
	@$(STACK) logs $(SERVICE)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

# Starts the services that are not running, runs pytest, then stops only what it started,
# also when pytest fails; the exit code is pytest's.
test: lint
	@if [ "$(VI_LOCAL_STACK)" = 0 ]; then \
		$(VENV)/bin/pytest $(PYTEST_ARGS); \
	else \
		$(STACK) with $(VENV)/bin/pytest $(PYTEST_ARGS); \
	fi

# A private stack of its own (its own state folder and ports), so it runs beside `make up`.
SEED ?=
soak: install
	$(VENV)/bin/python -m tests.faults.soak --profile full $(if $(SEED),--seed $(SEED)) \
		--report-dir bench/results

demo: up
	@deploy/local/demo.sh

