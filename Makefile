# Two commands set everything up on a fresh machine:
#   make demo   the quickstart on the local target (no cluster, no Docker)
#   make test   ruff, the import layers (lint-imports), mypy strict, every test and the
#               example notebooks, and the Kubernetes tests again with the lowest supported
#               kubernetes client (fast set: make test-fast)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The lowest `kubernetes` client pyproject.toml allows; its tests run against it too. It sits
# in its own --target folder, ahead of .venv's newer client on PYTHONPATH (with the modules
# only that client imports at start-up).
KUBE_LOWEST := 30.1.0
KUBE_LOWEST_DIR := $(VENV)/kube-$(KUBE_LOWEST)
# One worker inside `make test`, where it runs beside the main set's.
KUBE_LOWEST_WORKERS ?= 2
# The main set's workers: three on two cores, as many of its tests wait on processes and
# timers rather than compute.
WORKERS ?= 3

.PHONY: demo test test-fast test-kube-lowest lint typecheck bench clean

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
# Most tests and the example notebooks run on three workers (a file each at a time), while the
# Kubernetes tests run again with the lowest supported client beside them (their output
# follows); those that count requests or wait on timing (marked serial) run alone afterwards.
test: lint typecheck $(KUBE_LOWEST_DIR)/.installed
	$(MAKE) --no-print-directory test-kube-lowest KUBE_LOWEST_WORKERS=1 > $(VENV)/kube-lowest.log 2>&1 & lowest=$$!; \
	$(BIN)/pytest -q -n $(WORKERS) --dist loadfile --durations=15 --nbval-lax -m "not serial" \
	  tests notebooks; rc=$$?; \
	[ $$rc -ne 5 ] || echo "pytest collected no tests" >&2; \
	wait $$lowest; low=$$?; \
	echo "--- the Kubernetes tests with kubernetes==$(KUBE_LOWEST) (exit $$low):"; \
	tail -n 40 $(VENV)/kube-lowest.log; \
	[ $$rc -eq 0 ] && [ $$low -eq 0 ]
	$(BIN)/pytest -q --durations=15 -m serial tests; rc=$$?; \
	  [ $$rc -ne 5 ] || echo "pytest collected no serial tests" >&2; exit $$rc

$(KUBE_LOWEST_DIR)/.installed: Makefile
	$(BIN)/pip install -q --no-deps --target $(KUBE_LOWEST_DIR) 'kubernetes==$(KUBE_LOWEST)' \
	  google-auth cachetools pyasn1 pyasn1-modules rsa cryptography
	touch $@

test-kube-lowest: $(STAMP) $(KUBE_LOWEST_DIR)/.installed
	PYTHONPATH=$(abspath $(KUBE_LOWEST_DIR)) $(BIN)/python -c \
	  "import kubernetes as k; assert k.__version__ == '$(KUBE_LOWEST)', k.__version__"
	PYTHONPATH=$(abspath $(KUBE_LOWEST_DIR)) $(BIN)/pytest -q -p no:cacheprovider \
	  -n $(KUBE_LOWEST_WORKERS) --dist loadfile tests/integration/test_kube_*.py; rc=$$?; \
	  [ $$rc -ne 5 ] || echo "no Kubernetes tests were collected" >&2; exit $$rc

test-fast: lint typecheck
	$(BIN)/pytest -q -m "not slow and not browser" tests

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
