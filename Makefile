# Two entry points, each doing its own set-up:  `make lab`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Debian packages a target needs (installed once; see the script). Called in recipes, one at a time.
SYSTEM := PYTHON=$(PYTHON) scripts/install-system-packages.sh

# The learner's language in `make lab`: the machine's locale (lab/i18n.py reads it), or a switch:
# `make lab LANG=zh` (or LANG=en). A bare `zh` is no locale, so the kernel gets C.UTF-8 beside it.
LANGUAGE_SWITCH := $(if $(filter command line,$(origin LANG)),LAB_LANG=$(LANG) \
	LANG=$(or $(filter %.UTF-8 %.utf8,$(LANG)),C.UTF-8))
# The notebook `make lab` opens: the edition of that language (lab/i18n.py decides, with the switch),
# notebooks/zh/ for Chinese. Expanded only when the recipe runs (system python3: no venv needed).
EDITION = $(filter-out en,$(shell env $(LANGUAGE_SWITCH) $(PYTHON) -c 'from lab.i18n import detect; print(detect())'))
START = notebooks/$(addsuffix /,$(EDITION))00_start_here.ipynb

.PHONY: lab slides test lint system bench figures i18n clean

$(STAMP): pyproject.toml
	$(SYSTEM) lab
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The peers that benchmarks and notebook 04 compare with (uvicorn, gunicorn, watchfiles, watchdog).
PEERS := $(VENV)/.peers

$(PEERS): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

## Debian packages the tests use (python3-venv; Chromium and libatomic1 for the browser test,
## inotify-tools and wrk for comparisons, fonts).
system:
	$(SYSTEM) test

# JupyterLab settings for the venv: no "get notified about Jupyter news?" pop-up, no update check.
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json

$(LAB_SETTINGS): $(STAMP)
	mkdir -p $(dir $@)
	printf '%s\n' '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' > $@

## Set up and open the playground: JupyterLab on the repository (notebooks/, solutions/, docs/),
## opened at 00_start_here.ipynb of the machine's language (notebooks/zh/ in Chinese; loopback only).
lab: $(STAMP) $(LAB_SETTINGS)
	$(SYSTEM) lab
	env $(LANGUAGE_SWITCH) $(VENV)/bin/jupyter lab --ServerApp.root_dir=. --ServerApp.ip=127.0.0.1 \
		--LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
		--LabApp.default_url=/lab/tree/$(START) $(if $(filter 0,$(shell id -u)),--allow-root)

## Slides for a projector, from the notebooks (run, then one slide per section; cells tagged
## `optional` left out): build/slides/*.slides.html.
slides: $(STAMP)
	$(PY) scripts/slides.py --out build/slides notebooks/0[0-3]_*.ipynb

## Set up, lint (as `make lint`), and run the whole test suite (notebook 04 runs the check on
## uvicorn and gunicorn too). ruff and mypy come with the dev extra that $(STAMP) installs.
test: $(PEERS)
	$(MAKE) lint
	$(SYSTEM) test
	$(PY) -m pytest

## Lint, format check and type check (configured in pyproject.toml): ruff on every .py, mypy on lab/,
## tests/, benchmarks/, scripts/. `ruff format .` and `ruff check --fix .` repair most of what it finds.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## Benchmarks against peers (minutes; not part of CI).
bench: $(PEERS)
	$(SYSTEM) test
	$(PY) benchmarks/watcher.py
	$(PY) benchmarks/reload.py
	$(PY) benchmarks/reload.py --heavy
	$(PY) benchmarks/throughput.py --rounds 5
	$(PY) benchmarks/heartbeat.py
	$(PY) benchmarks/heartbeat_server.py --strategies wheel,lazy,scan,timer
	$(PY) benchmarks/soak.py --reloads 300
	$(PY) benchmarks/connections.py

## Redraw pic/ (the README's pictures, in English whatever the machine's language).
figures: $(STAMP)
	LAB_LANG=en $(PY) -m lab figures

## Message catalogs: extract the marked strings of lab/ and of the notebooks' code cells into
## lab/locale/reactor-lab.pot, merge them into each language's .po (new ones untranslated), compile
## the .mo files (pure Python, no gettext).
i18n:
	$(PYTHON) scripts/i18n.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts build
