# `make run` and `make test` work on a fresh machine: each creates .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run test bench schema clean

$(STAMP): setup.cfg pyproject.toml examples/rapport-referrals/setup.cfg
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,all]" -e examples/rapport-referrals
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	RAPPORT_ENV=development $(BIN)/rapport db upgrade
	RAPPORT_ENV=development $(BIN)/rapport serve

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The benchmarks compare with reference packages (lifetimes) kept out of the app's extras.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python -m bench

# Rewrite the committed SDL after an intended schema change (a test fails on drift).
schema: $(STAMP)
	RAPPORT_ENV=test RAPPORT_DATABASE_URL=sqlite:// \
	RAPPORT_PLUGINS=$$($(BIN)/python -c "from core.plugins import builtin_plugin_names as b; print(','.join(b()))") \
	$(BIN)/rapport schema > schema.graphql

clean:
	rm -rf $(VENV) instance .pytest_cache
