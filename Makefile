# Two commands for a fresh machine:  `make demo`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint services pins

# Installs at the versions of constraints.txt, the ones CI tested (`make pins` regenerates them).
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[test,mlflow,lint]"
	touch $@

install: $(VENV)/.installed

# Installs hpo, then tunes a CNN on the built-in synthetic images (a few minutes on 2 CPU cores).
demo: install
	$(VENV)/bin/hpo run demo

# Formatting, lint (incl. no TensorFlow/JAX/torch import under hpo/) and types.
lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy hpo

# System services the tests use for real: PostgreSQL, Chromium, docker-compose (Debian, root).
services:
	bash scripts/test-services.sh

# Three pytest-xdist workers on two cores (tests wait on servers and child processes too), a
# test file each at a time (module fixtures built once).
test: services install lint
	$(PY) -m pytest -n 3 --dist loadfile

# Re-resolves every dependency and rewrites constraints.txt; commit it with the change.
pins:
	bash scripts/pin.sh
