# Two entry points for a fresh machine (see README):
#   make demo   install, then run the whole pipeline on the embedded default (digits, no network)
#   make test   install, then run the test suite (CI calls this)
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test test-all reference bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU build (an unpinned torch pulls several GB of CUDA packages)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,transformer]"
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: install
	$(VENV)/bin/calib run

# Timed from before the install, so the figure is what a fresh clone costs; the slowest tests are listed.
test:
	@start=$$(date +%s); $(MAKE) --no-print-directory install && $(PY) -m pytest --durations=15; rc=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s in total (install + tests), exit status $$rc"; exit $$rc

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
