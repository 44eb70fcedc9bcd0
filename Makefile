# Two commands for a fresh machine:  `make demo`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test services

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[test,mlflow]"
	touch $@

install: $(VENV)/.installed

# Installs hpo, then tunes a CNN on the built-in synthetic images (a few minutes on 2 CPU cores).
demo: install
	$(VENV)/bin/hpo run demo

# System services the tests use for real: PostgreSQL, Chromium, docker-compose (Debian, root).
services:
	bash scripts/test-services.sh

# Two pytest-xdist workers, a test file each at a time (module fixtures built once).
test: services install
	$(PY) -m pytest -n 2 --dist loadfile
