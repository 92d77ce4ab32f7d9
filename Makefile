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

.PHONY: sync tools hooks up test test-fast test-slow lint proto proto-check bench chaos demo check clean

$(BOOT)/bin/uv:
	@mkdir -p .data
	$(PYTHON) -m venv $(BOOT)
	$(BOOT)/bin/pip install --quiet uv

$(VENV)/.synced: uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml) | $(UV)
	$(UV) sync --frozen --all-packages
	@touch $@

sync: $(VENV)/.synced

# Tools the tests need that are not Python packages: promtool (Debian's `prometheus` package) checks the
# alert rules. Silent when present; installed with apt-get when this is a root Debian/Ubuntu machine;
# otherwise one line says how, and the tests that need it fail with the same instruction.
tools:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: installing promtool (apt-get install prometheus)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
	      || { apt-get update -qq >/dev/null 2>&1 \
	           && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; } || true; \
	  fi; \
	  command -v promtool >/dev/null 2>&1 \
	    || echo "make: promtool is missing; install it with: sudo apt-get install prometheus (Debian/Ubuntu)"; }

hooks: sync  ## install the git pre-commit hooks (.pre-commit-config.yaml: the same checks as make lint)
	$(RUN)/pre-commit install --install-hooks

up: sync  ## run PostgreSQL (found or embedded), 3 services and 2 orchestrators in the foreground
	$(RUN)/sagaline up

lint: sync  ## ruff, mypy --strict, import-linter, proto freshness
	$(RUN)/ruff check .
	$(RUN)/ruff format --check .
	$(RUN)/mypy
	$(RUN)/lint-imports
	$(RUN)/python scripts/gen_protos.py --check

test: lint tools  ## lint, then every test (unit, integration, e2e, faults, deploy checks) with coverage
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
