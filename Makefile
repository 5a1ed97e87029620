# Two entry points for a fresh machine (see README):
#   make demo   install, then run the whole pipeline on the embedded default (digits, no network)
#   make test   install, then run the test suite (CI calls this)
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test test-unit test-all lint format reference bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU build (an unpinned torch pulls several GB of CUDA packages)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,transformer,peers]"
	# source notebooks stay output-free in git (JupyterLab's Run All saves outputs into them)
	-$(PY) -m helpers.run.nbclean install
	# JupyterLab's saves of a notebook run by hand are copied into its scratch run
	$(PY) -m helpers.run.hand_run install
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: install
	$(VENV)/bin/calib run

# Timed from before the install, so the figure is what a fresh clone costs; the slowest tests are listed.
test:
	@start=$$(date +%s); $(MAKE) --no-print-directory install && $(MAKE) --no-print-directory lint && \
	$(PY) -m pytest --durations=15; rc=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s in total (install + tests), exit status $$rc"; exit $$rc

test-unit: install  ## the fast gate: helpers on small real objects, no kernels
	$(PY) -m pytest -m "unit and not slow"

lint: install  ## ruff lint + format check (what CI runs)
	$(VENV)/bin/ruff check src tests benchmarks notebooks
	$(VENV)/bin/ruff format --check src tests benchmarks notebooks

format: install  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix src tests benchmarks notebooks
	$(VENV)/bin/ruff format src tests benchmarks notebooks

test-all: install
	$(PY) -m pytest -m ""

# Deliberately refresh the committed regression record (review the diff before committing).
reference: install
	rm -rf runs/reference
	$(VENV)/bin/calib run --runs-root runs --run-id reference --no-progress

bench: install
	$(PY) benchmarks/bench_pipeline.py

clean-venv:
	rm -rf $(VENV)
