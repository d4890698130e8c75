# The two commands of the README: `make demo` runs the whole stack, `make test` runs every check.
# Everything a fresh machine needs is installed from here (Python packages into .venv).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: bootstrap system-deps test lint unit demo clean

bootstrap: $(VENV)/.installed system-deps

# Browser tests drive Debian's chromium; Java 17 and Maven build the HAPI FHIR server; the shared
# jti replay store is tested against Debian's redis-server.
system-deps:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
	@command -v mvn >/dev/null || { apt-get update -qq && apt-get install -y -qq maven >/dev/null; }

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

demo: bootstrap
	$(BIN)/ichis demo

unit: bootstrap
	$(BIN)/pytest tests/unit

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var test-artifacts
