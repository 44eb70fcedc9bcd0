# Two commands for a fresh machine:  `make demo`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint docs reference services pins

# Installs at the versions of constraints.txt, the ones CI tested (`make pins` regenerates them).
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[test,mlflow,lint,docs]"
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

# The documentation site (site/): the pages generated from the code must be current (`make
# reference` rewrites them), then a strict build, so a broken link, a missing anchor or a
# page outside the navigation fails.
docs: install
	$(PY) scripts/gen_reference.py --check
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# Regenerates docs/cli.md and docs/search-space-reference.md after a CLI or space change.
reference: install
	$(PY) scripts/gen_reference.py

# System services the tests use for real: PostgreSQL, Chromium, docker-compose (Debian, root).
services:
	bash scripts/test-services.sh

# Three pytest-xdist workers on two cores (tests wait on servers and child processes too), a
# test file each at a time (module fixtures built once).
test: services install lint docs
	$(PY) -m pytest -n 3 --dist loadfile

# Re-resolves every dependency and rewrites constraints.txt; commit it with the change.
pins:
	bash scripts/pin.sh
