# Fresh machine: `make run` then `make test`. Each target installs what it needs into .venv, from
# requirements.lock (the tested versions; docs/install.md). Another Python:
#   make test PYTHON=python3.12 VENV=.venv-3.12
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
LOCK := requirements.lock
STAMP := $(VENV)/.installed
# The newest Python the project claims (pyenv's, where it has one) and its own venv, for
# `make test-newest`.
PYTHON_NEWEST ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) python3.13)
VENV_NEWEST ?= .venv-newest
# The packages whose versions `make test-newest` prints before it tests them.
SHOWN := jax jaxlib flax optax orbax-checkpoint blackjax grain numpy scipy ml_dtypes scikit-learn

.PHONY: install lock run test test-slow test-newest figures bench lint tensorboard clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# The locked versions, then the project itself (editable, no dependencies of its own).
$(STAMP): pyproject.toml $(LOCK) energy_ae/__init__.py | $(PY)
	$(PIP) install --quiet -r $(LOCK)
	$(PIP) install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Re-resolves requirements.lock after a change of pyproject.toml's ranges, keeping every pin that
# still fits; `make lock LOCK_FLAGS=--upgrade` moves every pin to the newest release in range.
# One lock for Python 3.11 to 3.13 (uv's universal resolution, one version of each package).
lock: | $(PY)
	$(PIP) install --quiet 'uv==0.13.8'
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --universal --fork-strategy fewest \
	  --python-version 3.11 --quiet $(LOCK_FLAGS) -o $(LOCK)

run: install
	$(PY) -m experiments.run --config=experiments/dae.py --workdir=runs/dae

# Two workers: most tests wait on subprocesses and compilation, so the 2 cores overlap them.
test: install
	$(PY) -m pytest -q -n 2

# The long end-to-end checks: every figure from scratch with the lecture's facts, every
# documented command, the benchmark's quick run.
test-slow: install
	$(PY) -m pytest -q -n 2 -m slow

# The quick suite on the newest Python the project claims with the newest release in every range
# of pyproject.toml (a fresh venv, not the lock): a new JAX, Flax, optax or Orbax release that
# breaks the project fails here.
test-newest:
	rm -rf $(VENV_NEWEST)
	$(PYTHON_NEWEST) -m venv $(VENV_NEWEST)
	$(VENV_NEWEST)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_NEWEST)/bin/python -m pip install --quiet -e '.[test]'
	$(VENV_NEWEST)/bin/python -c "import importlib.metadata as m, sys; print('Python', \
	  sys.version.split()[0] + ';', ', '.join(p + ' ' + m.version(p) for p in '$(SHOWN)'.split()))"
	$(VENV_NEWEST)/bin/python -m pytest -q -n 2

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
	rm -rf $(VENV) $(VENV_NEWEST) runs .pytest_cache
