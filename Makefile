# The two commands a new user needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The minimum-versions run has its own venv: every lower bound of pyproject.toml, pinned exactly.
MIN_VENV ?= .venv-min
MIN_PY := $(MIN_VENV)/bin/python
# What it runs (measured: 291 tests, 35 s wall on the 2 cores, after a 35 s first install): every unit
# module that drives a dependency (the call core with httpx requests, DNS answers through
# dnspython, the health checker and the refresher on anyio, the mock-transport clients), and an
# integration subset over real sockets: TLS to Pods (httpx, httpcore, ssl), the CLI's resolve and
# get (dnspython, anyio, httpx), user ASGI/WSGI apps on the local cluster (uvicorn, a2wsgi), on
# asyncio and trio, async and sync clients. Not run there: the pure core's unit tests (they
# import no dependency), test_typing.py (needs mypy), the examples (fastapi, flask and
# kubernetes-validate are test tools, not bounds we publish), and the slower integration modules,
# which the main run covers on the latest versions.
MIN_TESTS := tests/unit/test_call.py tests/unit/test_dns_answers.py \
	tests/unit/test_health_checker.py tests/unit/test_mock_transport.py \
	tests/unit/test_refresher.py tests/integration/test_tls.py tests/integration/test_cli.py \
	tests/testing/test_user_apps.py -k "not demo_runs_to_completion"
# The httpx2 flavour at its lowest version, in a venv of its own: httpx2 2.12 needs anyio >= 4.10,
# newer than ours (installed into the first venv, it stayed there, with a trio too old for it).
MIN_HTTPX2_VENV ?= .venv-min-httpx2
MIN_HTTPX2_PY := $(MIN_HTTPX2_VENV)/bin/python
MIN_HTTPX2_TESTS := tests/integration/test_httpx2.py
export NO_MKDOCS_2_WARNING := 1

.PHONY: demo test lint typecheck unit docs test-min bench clean kubeapi

$(VENV)/.demo-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[testing]'
	touch $@

# The package with its extras, and the development tools of the `test` dependency group (PEP 735;
# `pip install --group` needs pip >= 25.1, hence the upgrade first).
TEST_EXTRAS := testing,prometheus,opentelemetry,top,httpx2

$(VENV)/.test-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade 'pip>=25.1'
	$(PY) -m pip install --quiet -e '.[$(TEST_EXTRAS)]' --group test
	touch $@ $(VENV)/.demo-installed

$(MIN_VENV)/.installed: pyproject.toml tools/lower_bounds.py
	rm -rf $(MIN_VENV)
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_PY) -m pip install --quiet --upgrade pip
	$(PYTHON) tools/lower_bounds.py > $(MIN_VENV)/requirements.txt
	$(MIN_PY) -m pip install --quiet -r $(MIN_VENV)/requirements.txt
	$(MIN_PY) -m pip install --quiet --no-deps -e .
	$(MIN_PY) -m pip check
	touch $@

$(MIN_HTTPX2_VENV)/.installed: pyproject.toml tools/lower_bounds.py
	rm -rf $(MIN_HTTPX2_VENV)
	$(PYTHON) -m venv $(MIN_HTTPX2_VENV)
	$(MIN_HTTPX2_PY) -m pip install --quiet --upgrade pip
	$(PYTHON) tools/lower_bounds.py --extra httpx2 > $(MIN_HTTPX2_VENV)/requirements.txt
	$(MIN_HTTPX2_PY) -m pip install --quiet -r $(MIN_HTTPX2_VENV)/requirements.txt
	$(MIN_HTTPX2_PY) -m pip install --quiet --no-deps -e .
	$(MIN_HTTPX2_PY) -m pip check
	touch $@

## Run the narrated demo on an embedded local cluster (no Kubernetes needed).
demo: $(VENV)/.demo-installed
	$(VENV)/bin/headlesslb demo

## Lint, type-check, run the whole suite (asyncio and trio, async and sync clients), build the
## docs with warnings as errors, then run the minimum-versions subset.
## Four workers on 2 cores: the suite mostly waits on real servers and cluster processes (measured:
## 3 min 30 s at -n 2, 2 min 57 s at -n 4, with other work loading the machine; both green).
test: $(VENV)/.test-installed lint typecheck kubeapi
	$(PY) -m pytest -n 4
	$(MAKE) docs test-min

## Also checks that the generated shells (sync, httpx2) match their source: a hand edit of one,
## or an edit of the source without `python tools/unasync.py`, fails here.
lint: $(VENV)/.test-installed
	$(PY) -m ruff check headlesslb headlesslb_pytest tests benchmarks examples tools
	$(PY) -m ruff format --check headlesslb headlesslb_pytest tests benchmarks examples tools
	$(PY) tools/unasync.py --check

typecheck: $(VENV)/.test-installed
	$(PY) -m mypy --strict headlesslb headlesslb_pytest examples

## The kubeapi bed of tests/kubeapi (docs/testing-kubeapi.md): etcd and our server on Kubernetes'
## own API machinery, from Debian sid's packages pinned in tools/kubeapi/debs.lock, built into a
## cache every checkout shares (~/.cache/headlesslb/kubeapi). Measured on the 2 cores, shared:
## cold 3 min 19 s (79 .debs, 85 MB, in 2 s; 192 s compiling), warm 0.1 s; 2.0 GB of disk. Cheap
## enough for every `make test`, so CI's fresh clone always builds it. Status 75 (the archive
## unreachable, or a pin gone from sid) lets `make test` go on: the bed's tests then skip, saying
## why and how to refresh the pins (tools/kubeapi/relock.py).
kubeapi:
	$(PYTHON) tools/kubeapi/build.py || [ $$? -eq 75 ]

unit: $(VENV)/.test-installed
	$(PY) -m pytest tests/unit

## The documentation site (mkdocs-material, API reference from docstrings) into site/;
## strict: any warning (a broken link, a missing snippet or reference) fails the build.
docs: $(VENV)/.test-installed
	$(VENV)/bin/mkdocs build --strict --quiet

## The suite's MIN_TESTS subset on the minimum versions of every dependency (see MIN_TESTS).
test-min: $(MIN_VENV)/.installed $(MIN_HTTPX2_VENV)/.installed
	$(MIN_PY) -m pytest -n 2 -p no:cacheprovider $(MIN_TESTS)
	$(MIN_HTTPX2_PY) -m pytest -n 2 -p no:cacheprovider $(MIN_HTTPX2_TESTS)

## Benchmarks print a table and write JSON under benchmarks/results/.
## overhead.py's fast Pods are nginx: Debian's nginx-light is installed first if missing (as root).
bench: $(VENV)/.test-installed
	command -v nginx >/dev/null || apt-get install -y nginx-light
	command -v valgrind >/dev/null || apt-get install -y valgrind
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/own_cost.py
	$(PY) benchmarks/pickers.py
	$(PY) benchmarks/sharding.py
	$(PY) benchmarks/slow_pod.py
	$(PY) benchmarks/failover.py
	$(PY) benchmarks/overload.py
	$(PY) benchmarks/slow_start.py
	$(PY) benchmarks/bounded_load.py
	$(PY) benchmarks/telemetry_overhead.py
	$(PY) benchmarks/clusterip_spread.py
	$(PY) benchmarks/refresh_stall.py
	$(PY) benchmarks/memory.py
	$(PY) benchmarks/dns_load.py
	$(PY) benchmarks/inference.py

clean:
	rm -rf $(VENV) $(MIN_VENV) $(MIN_HTTPX2_VENV) site .mypy_cache .ruff_cache .pytest_cache .hypothesis
