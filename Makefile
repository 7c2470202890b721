# DeltaForge developer entry points. `make test` and `make demo` do all their own set-up on a
# fresh Debian machine: Debian packages, Maven jars, a virtualenv with the project installed.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The stack tool needs only the standard library, so it also runs before the virtualenv exists.
STACK := $(PYTHON) -m hack.stack
PYTEST_ARGS ?=
# `make bench` runs each scenario in turn, each with BENCH_ARGS (e.g. BENCH_SCENARIOS=pg-kafka).
BENCH_SCENARIOS ?= pg-kafka mysql-kafka pg-redis pg-latency mysql-latency operator-scale
BENCH_ARGS ?=

.PHONY: help bootstrap venv lint typecheck test unit crds demo demo-down bench stack-up stack-down stack-status stack-env stack-clean clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(STACK) install
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

venv: $(VENV)/.installed ## create .venv with DeltaForge installed editable, plus dev tools

bootstrap: venv ## install everything the tests need (packages, jars, virtualenv)
	$(STACK) install

lint: venv ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv ## mypy (strict) on the packages and the stack tooling
	$(BIN)/mypy

test: bootstrap lint typecheck ## everything CI runs: set-up, lint, types, then all tests on the real stack
	$(STACK) up
	$(BIN)/pytest $(PYTEST_ARGS)
ifdef CI
	$(STACK) down
endif

unit: venv ## only the tests that need no server
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

crds: venv ## regenerate crds/ and the Helm chart's copy from the spec model (a unit test checks both)
	$(BIN)/python -m deltaforge_operator.crd > crds/pipelines.deltaforge.io.yaml.tmp
	mv crds/pipelines.deltaforge.io.yaml.tmp crds/pipelines.deltaforge.io.yaml
	cp crds/pipelines.deltaforge.io.yaml helm/deltaforge/files/pipelines.deltaforge.io.yaml

demo: bootstrap ## the main job (see README): stack, Helm chart, operator, example Pipelines, change events
	$(STACK) up
	@$(BIN)/python -m hack.demo

demo-down: venv ## remove what `make demo` set up (Pipelines, release, pod runner); the servers keep running
	@$(BIN)/python -m hack.demo down

bench: bootstrap ## the benchmarks (BENCH_SCENARIOS): the worker versus pg_recvlogical / mysql-replication and Debezium
	$(STACK) up
	for scenario in $(BENCH_SCENARIOS); do $(BIN)/python -m bench run $$scenario $(BENCH_ARGS); done

stack-up: ## start PostgreSQL, MariaDB, Redis and Kafka on loopback (idempotent)
	$(STACK) up

stack-down: ## stop every server of the local stack (data stays)
	$(STACK) down

stack-status: ## show which servers run
	$(STACK) status

stack-env: ## print connection settings as shell exports
	@$(STACK) env

stack-clean: ## stop the stack and delete its data
	$(STACK) clean

clean: ## remove the virtualenv and caches of this checkout (not the download cache)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
