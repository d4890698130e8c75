# The two commands of the README: `make demo` runs the whole stack, `make test` runs every check.
# Everything a fresh machine needs is installed from here (Python packages into .venv).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: bootstrap test lint unit demo clean

bootstrap: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	scripts/run-tests

unit: bootstrap
	$(BIN)/pytest tests/unit

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var test-artifacts
