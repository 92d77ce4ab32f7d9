# Sagaline: `make up` runs the whole system locally, `make test` proves it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BOOT := .data/bootstrap
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(BOOT)/bin/uv
endif
RUN := $(VENV)/bin

.PHONY: sync up test test-fast test-slow lint proto proto-check bench chaos demo check clean

$(BOOT)/bin/uv:
	@mkdir -p .data
	$(PYTHON) -m venv $(BOOT)
	$(BOOT)/bin/pip install --quiet uv

$(VENV)/.synced: uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml) | $(UV)
	$(UV) sync --frozen --all-packages
	@touch $@

sync: $(VENV)/.synced

up: sync  ## run PostgreSQL (found or embedded), 3 services and 2 orchestrators in the foreground
	$(RUN)/sagaline up

lint: sync  ## ruff, mypy --strict, import-linter, proto freshness
	$(RUN)/ruff check .
	$(RUN)/ruff format --check .
	$(RUN)/mypy
	$(RUN)/lint-imports
	$(RUN)/python scripts/gen_protos.py --check

test: lint  ## lint, then every test (unit, integration, e2e, faults) with coverage
	$(RUN)/pytest -m "not slow" --cov --cov-report=term

test-slow: sync  ## the long suites kept out of `make test`
	$(RUN)/pytest -m slow; code=$$?; [ $$code -eq 0 ] || [ $$code -eq 5 ]  # 5: no slow suite selected

proto: sync  ## regenerate libs/contracts from the protos
	$(RUN)/python scripts/gen_protos.py

bench: sync  ## throughput and latency against a stack the benchmark starts itself
	$(RUN)/python -m bench

chaos: sync  ## the whole fault battery (about 20 minutes; restarts the local PostgreSQL), writes docs/reliability.md
	SAGALINE_CHAOS_RESTART_SERVER=1 $(RUN)/python -m sagaline.chaos

demo: sync  ## one saga of each outcome against a running stack
	$(RUN)/sagaline demo

check: sync  ## the invariants of SPEC section 8 against the local databases
	$(RUN)/sagaline check

clean:
	rm -rf $(VENV) .data .mypy_cache .ruff_cache .pytest_cache .coverage*
