# vae-mnist: the two commands a new machine needs.
#   make run    set up (venv of the stack this host can load, pinned install, MNIST), run the local pipeline
#   make test   set up, run the test suite
# Both reuse what is already there: the venv is rebuilt only when pyproject.toml or the stack's
# lock change, and fetched data is only verified again.
#
# Two stacks (README, "Stacks"): `current`, TFX 1.21 on Python 3.11-3.13, whose ml-metadata and
# TFDV wheels need glibc >= 2.39; `fallback`, TFX 1.16 on Python 3.10, for older hosts. STACK=auto
# picks current when the host's glibc and a Python 3.11-3.13 allow it; `make STACK=fallback ...`
# or `make STACK=current ...` forces one. `.ci/debian13 make test` runs the current stack on an
# older host, inside a Debian 13 root.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STACK ?= auto
RUN_ARGS ?=
PYTEST_ARGS ?=

GLIBC := $(shell getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $$2}')
GLIBC_CURRENT := 2.39
GLIBC_OK := $(shell printf '%s\n%s\n' $(GLIBC_CURRENT) "$(GLIBC)" | sort -V -C && echo yes)
# The first python<version> that runs: on PATH, else the newest of pyenv's (whose shims may exist
# and refuse to run outside their pyenv version).
find_python = $(shell for v in $(1); do \
  for p in $$(command -v python$$v) $$(ls -d $$(pyenv root 2>/dev/null)/versions/$$v.*/bin/python$$v 2>/dev/null | sort -V | tail -n 1); do \
    $$p -c '' 2>/dev/null && { echo $$p; exit 0; }; done; done)
# Looked up once per make (each lookup starts interpreters), unless given.
ifndef PYTHON_CURRENT
  PYTHON_CURRENT := $(call find_python,3.13 3.12 3.11)
endif
ifndef PYTHON_FALLBACK
  PYTHON_FALLBACK := $(call find_python,3.10)
endif

ifeq ($(STACK),auto)
  ifeq ($(GLIBC_OK)$(if $(PYTHON_CURRENT),py),yespy)
    override STACK := current
    WHY := glibc $(GLIBC) and $(PYTHON_CURRENT)
  else
    override STACK := fallback
    WHY := $(if $(GLIBC_OK),no Python 3.11-3.13 found,glibc $(GLIBC) is older than the $(GLIBC_CURRENT) TFX 1.21's wheels need); \`.ci/debian13 make test\` runs the current stack here
  endif
else
  WHY := forced by STACK=$(STACK)
endif
ifeq ($(STACK),current)
  PYTHON := $(PYTHON_CURRENT)
  STACK_NAME := TFX 1.21 on Python 3.11-3.13
else ifeq ($(STACK),fallback)
  PYTHON := $(PYTHON_FALLBACK)
  STACK_NAME := TFX 1.16 on Python 3.10
else
  $(error STACK must be auto, current or fallback, not '$(STACK)')
endif
LOCK := locks/$(STACK).txt
NODEPS := $(wildcard locks/$(STACK)-nodeps.txt)
# One stamp per stack and work tree: .ci/debian13 mounts one venv into whichever tree it runs in,
# and the editable install must point at that tree.
STAMP := $(VENV)/.installed-$(STACK)-$(shell printf %s "$(CURDIR)" | md5sum | cut -c1-8)

.PHONY: run test test-full install stack fashion-mnist data lint lock clean

run: install
	$(VENV)/bin/vae-mnist run $(RUN_ARGS)

# The suite runs on one pytest worker per core, up to 4 (pytest-xdist): a test mostly waits on one
# core (TensorFlow's start, Beam's DirectRunner), so two cores nearly halve it. Each worker builds
# the session fixtures it needs, so more workers buy less. A test file goes whole to one worker
# (--dist loadfile): its module fixtures are pipeline runs its tests share. MNIST is fetched
# first, once, not by two workers at the same time.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))

test: install fashion-mnist data
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The slow tests on the full 70,000-image dataset.
test-full: install
	$(VENV)/bin/pytest -m full_data $(PYTEST_ARGS)

install: stack $(STAMP)

# One line: which stack, and why.
stack:
	@echo "stack: $(STACK) ($(STACK_NAME)): $(WHY)"

$(STAMP): pyproject.toml $(LOCK) $(NODEPS)
	@test -n "$(PYTHON)" || { echo "no Python for the $(STACK) stack ($(STACK_NAME)): e.g. 'pyenv install 3.10'" >&2; exit 1; }
	@test "$(STACK)" != current -o -n "$(GLIBC_OK)" || { echo "the current stack needs glibc $(GLIBC_CURRENT); this host has $(GLIBC): use .ci/debian13 make ..." >&2; exit 1; }
	@# A venv of the other stack's Python is replaced, not patched.
	@v='import sys; print(sys.version_info[:2])'; test ! -x $(PY) || [ "$$($(PY) -c "$$v")" = "$$($(PYTHON) -c "$$v")" ] \
	  || { echo "replacing $(VENV): it holds another stack's Python"; rm -rf $(VENV)/* $(VENV)/.installed-*; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(LOCK)
	$(if $(NODEPS),$(PY) -m pip install --quiet --no-deps -r $(NODEPS))
	$(PY) -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*  # another tree's stamp no longer holds: the editable install points here
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

# Re-resolves the dependencies of the stack and pins the result in its lock (`.ci/debian13 make
# lock` for the current stack on an older host). The current stack spans Python 3.11-3.13, whose
# resolutions differ (scipy 1.18 needs 3.12, apache-beam's GCP extra pins google-apitools by
# Python), so its lock is uv's universal resolution, with markers; the fallback's is one
# Python's, frozen from a scratch venv.
lock: stack
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	{ echo "# Exact versions of every package vae-mnist installs on the $(STACK) stack ($(STACK_NAME))."; \
	  echo "# Made by 'make lock' ($(if $(filter current,$(STACK)),uv's universal resolution for Python 3.11-3.13,pip freeze of $$(.venv-lock/bin/python --version))); run it after changing pyproject.toml's dependencies."; } > $(LOCK).tmp
ifeq ($(STACK),current)
	.venv-lock/bin/pip install --quiet uv
	UV_NATIVE_TLS=1 .venv-lock/bin/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
	  --no-header --no-annotate --quiet >> $(LOCK).tmp
else
	.venv-lock/bin/pip install --quiet -e '.[dev]'
	.venv-lock/bin/pip freeze --exclude-editable | grep -v '^vae-mnist' >> $(LOCK).tmp
endif
	mv $(LOCK).tmp $(LOCK)
	rm -rf .venv-lock

clean:
	rm -rf outputs
