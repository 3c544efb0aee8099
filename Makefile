# vitscope: `make book` builds the offline demo site, `make test` runs the test suite. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.vitscope-installed
PROFILE ?= demo

.PHONY: install book test test-fast bench clean

install: $(STAMP)

# Idempotent: re-runs pip only when pyproject.toml changes (or the venv is missing).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

book: install
	$(VENV)/bin/vitscope book --profile $(PROFILE)
	@echo "Open _build/html/index.html"

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

bench: install
	$(PY) benchmarks/run.py

clean:
	rm -rf _build book/generated cache .pytest_cache
