# The two commands a new user needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint typecheck unit bench clean

$(VENV)/.demo-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[testing]'
	touch $@

$(VENV)/.test-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.demo-installed

## Run the narrated demo on an embedded local cluster (no Kubernetes needed).
demo: $(VENV)/.demo-installed
	$(VENV)/bin/headlesslb demo

## Lint, type-check and run the whole suite (asyncio and trio, async and sync clients).
## Two workers: the suite mostly waits on real servers, so this halves it on 2 cores.
test: $(VENV)/.test-installed lint typecheck
	$(PY) -m pytest -n 2

lint: $(VENV)/.test-installed
	$(PY) -m ruff check headlesslb tests benchmarks examples

typecheck: $(VENV)/.test-installed
	$(PY) -m mypy --strict headlesslb

unit: $(VENV)/.test-installed
	$(PY) -m pytest tests/unit

## Benchmarks print a table and write JSON under benchmarks/results/.
bench: $(VENV)/.test-installed
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/pickers.py
	$(PY) benchmarks/sharding.py
	$(PY) benchmarks/slow_pod.py
	$(PY) benchmarks/failover.py
	$(PY) benchmarks/refresh_stall.py
	$(PY) benchmarks/memory.py
	$(PY) benchmarks/dns_load.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
