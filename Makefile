# glomssl: `make demo` runs the main job on bundled data; `make test` runs lint, types and tests.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test test-all lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m glomssl.demo --out demo_out

lint: $(STAMP)
	$(VENV)/bin/ruff check glomssl tests benchmarks tools
	$(VENV)/bin/ruff format --check glomssl tests benchmarks tools
	$(VENV)/bin/mypy

# The test command CI runs: lint, types, then every test not marked slow (realdata tests included
# when ../shared/data is present).
test: lint
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

# Everything, slow real-data evidence included (tens of minutes on a 2-core CPU).
test-all: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf demo_out .pytest_cache .mypy_cache .ruff_cache
