# Two entry points: `make run` (set up, then distil the embedded default dataset)
# and `make test` (set up, then run the test suite). Both are idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python
KEDRO := $(VENV)/bin/kedro
export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

.PHONY: install run test lint viz

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch from the local wheel cache: an unpinned torch pulls CUDA.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

run: install
	$(KEDRO) run --pipelines distill

test: install
	$(VENV)/bin/ruff check src tests
	$(PY) -m pytest

viz: install
	$(KEDRO) viz build
