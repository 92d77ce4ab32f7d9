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

.PHONY: sync tools hooks up test test-fast test-slow coverage lint proto proto-check bench chaos demo check clean

$(BOOT)/bin/uv:
	@mkdir -p .data
	$(PYTHON) -m venv $(BOOT)
	$(BOOT)/bin/pip install --quiet uv

$(VENV)/.synced: uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml) | $(UV)
	$(UV) sync --frozen --all-packages
	@touch $@

sync: $(VENV)/.synced

# Tools the tests need that are not Python packages: promtool (Debian's `prometheus` package) checks the
# alert rules; openssl makes the certificates of the TLS tests (`sagaline certs`; optional on Debian);
# Chromium runs the browser tests (tests/e2e/test_e2e_browser.py, driven by Playwright). Silent
# when present; installed with apt-get when this is a root Debian/Ubuntu machine; otherwise one line says
# how, and the tests that need it fail with the same instruction.
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
	@command -v openssl >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: installing openssl for the TLS tests (apt-get install openssl)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >/dev/null 2>&1 \
	      || { apt-get update -qq >/dev/null 2>&1 \
	           && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >/dev/null 2>&1; } || true; \
	  fi; \
	  command -v openssl >/dev/null 2>&1 \
	    || echo "make: openssl is missing; install it with: sudo apt-get install openssl (Debian/Ubuntu)"; }
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || command -v google-chrome >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: installing Chromium for the browser tests (apt-get install chromium chromium-driver)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
	      || { apt-get update -qq >/dev/null 2>&1 \
	           && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1; } || true; \
	  fi; \
	  command -v chromium >/dev/null 2>&1 \
	    || echo "make: chromium is missing; install it with: sudo apt-get install chromium chromium-driver (Debian/Ubuntu)"; }

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

UNIT := libs/servicekit/tests/unit $(wildcard services/*/tests/unit)

# The unit suites run first and alone, so their coverage is measured on its own (kept in .data/coverage-unit);
# the other suites append to it. The 80% floor applies to the total; scripts/coverage_report.py then holds
# each service to its floors, unit tests alone and all tests (see its docstring).
test: lint tools  ## lint, then every test (unit, integration, e2e, faults, deploy checks) with coverage
	$(RUN)/pytest -m "not slow" $(UNIT) --cov --cov-report= --cov-fail-under=0
	@mkdir -p .data && cp .coverage .data/coverage-unit
	$(RUN)/pytest -m "not slow" $(addprefix --ignore=,$(UNIT)) --cov --cov-append --cov-report=term
	$(RUN)/python scripts/coverage_report.py --check

coverage: sync  ## per-service coverage, unit tests alone and all tests, from the last `make test`
	$(RUN)/python scripts/coverage_report.py

test-slow: sync  ## the long suites kept out of `make test`
	$(RUN)/pytest -m slow; code=$$?; [ $$code -eq 0 ] || [ $$code -eq 5 ]  # 5: no slow suite selected

proto: sync  ## regenerate libs/contracts from the protos
	$(RUN)/python scripts/gen_protos.py

bench: sync  ## every performance goal measured on stacks it starts itself (about 5 minutes); writes docs/performance.md
	$(RUN)/python -m bench.report --baseline bench/baseline.json

chaos: sync  ## the whole fault battery (about 20 minutes; restarts the local PostgreSQL), writes docs/reliability.md
	SAGALINE_CHAOS_RESTART_SERVER=1 $(RUN)/python -m sagaline.chaos

demo: sync  ## one saga of each outcome against a running stack
	$(RUN)/sagaline demo

check: sync  ## the invariants of SPEC section 8 against the local databases
	$(RUN)/sagaline check

clean:
	rm -rf $(VENV) .data .mypy_cache .ruff_cache .pytest_cache .coverage*
