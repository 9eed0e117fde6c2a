# Fresh machine: `make run` then `make test`. Each target installs what it needs into .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install run test test-slow figures bench lint tensorboard clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m experiments.run --config=experiments/dae.py --workdir=runs/dae

# Two workers: most tests wait on subprocesses and compilation, so the 2 cores overlap them.
test: install
	$(PY) -m pytest -q -n 2

# The long end-to-end checks: every figure from scratch with the lecture's facts, every
# documented command, the benchmark's quick run.
test-slow: install
	$(PY) -m pytest -q -n 2 -m slow

# Trains what the figures need under runs/figures/runs (reused when run again), writes the
# PNGs to runs/figures/figures and copies them to docs/figures for the README's gallery.
figures: install
	$(PY) -m experiments.figures --workdir=runs/figures
	mkdir -p docs/figures && cp runs/figures/figures/*.png runs/figures/figures/summary.json docs/figures/

bench: install
	$(PIP) install --quiet -e '.[bench]'
	$(PY) -m experiments.benchmark --out=runs/benchmark.json

lint: install
	$(PIP) install --quiet -e '.[lint]'
	$(PY) -m ruff check energy_ae experiments tests

tensorboard: install
	$(PIP) install --quiet -e '.[tensorboard]'
	$(VENV)/bin/tensorboard --logdir runs

clean:
	rm -rf $(VENV) runs .pytest_cache
