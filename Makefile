# streamtune: one command to set up and run the demo, one to run the tests.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
HOME_DIR ?= .streamtune

.PHONY: install demo test lint ui clean

$(BIN)/streamtune: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU build of torch from the local wheel cache; a loose spec would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

install: $(BIN)/streamtune

demo: install
	$(BIN)/streamtune demo --home $(HOME_DIR)

test: install
	$(BIN)/python -m pytest -q

# ruff (lint + format), the import contracts (tests/test_architecture.py runs the same checks) and
# `dg check defs` (the Dagster definitions load and validate; tests/orchestration/test_dg_cli.py)
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/dg check defs

ui: install
	$(BIN)/streamtune ui --home $(HOME_DIR)

clean:
	rm -rf $(HOME_DIR) .pytest_cache
