# Two entry points, each doing its own set-up:  `make lab`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: lab test system bench figures clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

## Debian packages the tests use (Chromium for the browser test, inotify-tools and wrk for comparisons).
system:
	scripts/install-system-packages.sh

## Set up and open the playground: JupyterLab on notebooks/ (loopback only).
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks --ServerApp.ip=127.0.0.1 \
		--LabApp.default_url=/lab/tree/00_start_here.ipynb $(if $(filter 0,$(shell id -u)),--allow-root)

## Set up and run the whole test suite.
test: system $(STAMP)
	$(PY) -m pytest

## Benchmarks against peers (minutes; not part of CI).
bench: system $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) benchmarks/watcher.py
	$(PY) benchmarks/reload.py
	$(PY) benchmarks/throughput.py --rounds 5
	$(PY) benchmarks/heartbeat.py
	$(PY) benchmarks/heartbeat_server.py --strategies wheel,lazy,scan,timer
	$(PY) benchmarks/soak.py --reloads 300

figures: $(STAMP)
	$(PY) -m lab figures

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
