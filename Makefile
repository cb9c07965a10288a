# Two commands set everything up on a fresh machine:
#   make demo   the quickstart on the local target (no cluster, no Docker)
#   make test   ruff, the import layers (lint-imports), mypy strict and every test
#               (fast set: make test-fast)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck unit integration notebooks bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m mlshift.demo

lint: $(STAMP)
	$(BIN)/ruff check mlshift model_server tests benchmarks
	$(BIN)/ruff format --check mlshift model_server tests benchmarks
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected nothing: that is a failure here, never a pass.
test: lint typecheck
	$(BIN)/pytest -q tests; rc=$$?; [ $$rc -ne 5 ] || echo "pytest collected no tests" >&2; exit $$rc
	$(BIN)/pytest -q --nbval-lax -p no:cacheprovider notebooks; rc=$$?; \
	  [ $$rc -ne 5 ] || echo "no notebooks were collected" >&2; exit $$rc

test-fast: lint typecheck
	$(BIN)/pytest -q -m "not slow and not browser" tests

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
