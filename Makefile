# vitscope: `make book` builds the offline demo site, `make test` runs the test suite. Both set up .venv first.
# The venv is installed from requirements.lock (exact versions and hashes); `make lock` regenerates the lock.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.vitscope-installed
LOCK   := requirements.lock
PIP_TOOLS := pip-tools==7.6.2
PROFILE ?= demo
# Pages executed at once by `make book` (each kernel gets cores/JOBS threads); 2 suits the 2-core reference machine.
JOBS ?= 2

.PHONY: install lock book test test-fast lint bench mutate device-check clean

install: $(STAMP)

# Idempotent: re-runs pip only when the lock or pyproject.toml changes (or the venv is missing).
# Every package comes from the lock, hash-checked; the project itself is added without resolving anything
# (--no-deps), built by the locked setuptools (--no-build-isolation) rather than whatever a build env downloads.
$(STAMP): $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Re-resolve pyproject.toml (the project + its `test` extra + its build requirements) into the lock, keeping
# the pins that still satisfy it; UPGRADE=1 moves every package to its newest allowed release. Also writes
# environment.yml from the new lock. pip-tools is the locking tool, not a dependency: it is installed here only.
lock: install
	$(PY) -m pip install --quiet "$(PIP_TOOLS)"
	$(PY) tools/lock.py $(if $(UPGRADE),--upgrade)

book: install
	$(VENV)/bin/vitscope book --profile $(PROFILE) --jobs $(JOBS)
	@echo "Open _build/html/index.html"

test: install lint
	$(PY) -m pytest

# ruff (line length 120; rules in pyproject.toml); part of `make test`, so CI runs it
lint: install
	$(VENV)/bin/ruff check lib tests tools benchmarks

test-fast: install
	$(PY) -m pytest -m "not slow"

# Benchmarks against the tools researchers use (pytorch-cka, torch-cka, faiss-cpu, scikit-learn): the `bench`
# extra is installed here only, it is not part of the lock. BENCH_ARGS e.g. --quick or --only cka
bench: install
	$(PY) -m pip install --quiet --no-deps "pytorch-cka==1.1.3" "torch-cka==0.21" "faiss-cpu>=1.8"
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# Mutation testing (issue 17): hours on 2 cores, not in CI. MUTATE_ARGS e.g. "--only data --fail-under 90", "--only data --rerun", "--only kernels --sample 400", "--report --record"
mutate: install
	$(PY) -m pip install --quiet "mutmut>=3.8,<4"
	$(PY) tools/mutate.py --diffs $(MUTATE_ARGS)

# Same answers on a GPU as on the CPU? Extraction, kernels, a probe and a zoo training step on DEVICE vs the CPU,
# with named tolerances (tools/device_check.py); DEVICE=cpu is a dry run.
DEVICE ?= cuda
device-check: install
	$(PY) tools/device_check.py --device $(DEVICE)

clean:
	rm -rf _build book/generated cache .pytest_cache
