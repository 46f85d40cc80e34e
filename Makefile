# vae-mnist: the two commands a new machine needs.
#   make run    set up (Python 3.10 venv, pinned install, MNIST), run the local pipeline
#   make test   set up, run the test suite
# Both reuse what is already there: the venv is rebuilt only when pyproject.toml or
# requirements.lock change, and fetched data is only verified again.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# TFX 1.16 supports Python 3.9-3.10 only; .python-version selects 3.10 for pyenv users.
PYTHON310 ?= $(shell command -v python3.10 2>/dev/null || ls -d $$(pyenv root 2>/dev/null)/versions/3.10*/bin/python3.10 2>/dev/null | tail -n 1)
RUN_ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test test-full install fashion-mnist data lint lock clean

run: install
	$(VENV)/bin/vae-mnist run $(RUN_ARGS)

test: install fashion-mnist
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The slow tests on the full 70,000-image dataset.
test-full: install
	$(VENV)/bin/pytest -m full_data $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock requirements-nodeps.txt
	@test -n "$(PYTHON310)" || { echo "Python 3.10 is needed (TFX 1.16): e.g. 'pyenv install 3.10'" >&2; exit 1; }
	test -x $(PY) || $(PYTHON310) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Fashion-MNIST, the second dataset, is Debian's dataset-fashion-mnist; its tests skip without it.
fashion-mnist:
	@test -d /usr/share/datasets/fashion-mnist || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null && \
	  { apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null; }; }; } || \
	  echo "note: could not install dataset-fashion-mnist; its tests will be skipped" >&2

data: install
	$(VENV)/bin/vae-mnist data fetch

lint: install
	$(VENV)/bin/ruff check .

# Re-resolves the dependencies in a scratch venv and pins the result.
lock:
	rm -rf .venv-lock && $(PYTHON310) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip && .venv-lock/bin/pip install --quiet -e '.[dev]'
	{ echo "# Exact versions of every package vae-mnist installs (Python 3.10, TFX 1.16 family)."; \
	  echo "# Regenerate with 'make lock' after changing pyproject.toml's dependencies."; \
	  .venv-lock/bin/pip freeze --exclude-editable | grep -v '^vae-mnist'; } > requirements.lock
	rm -rf .venv-lock

clean:
	rm -rf outputs
