# `make run` and `make test` work on a fresh machine: each creates .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run test fuzz bench schema clean

$(STAMP): setup.cfg pyproject.toml examples/rapport-referrals/setup.cfg
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,all]" -e examples/rapport-referrals
	# GraphiQL's files from the npm registry (integrity-checked; no Node needed).
	$(BIN)/python -m api.graphiql
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	RAPPORT_ENV=development $(BIN)/rapport db upgrade
	RAPPORT_ENV=development $(BIN)/rapport serve

# The suite runs in parallel (pytest-xdist; each process gets its own PostgreSQL and Redis
# database): TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= auto

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The schema-driven fuzz run of `make test`, long and with a random seed (printed; replay one
# with RAPPORT_FUZZ_SEED=N). RAPPORT_FUZZ_SECONDS is per database.
RAPPORT_FUZZ_SECONDS ?= 600
fuzz: $(STAMP)
	RAPPORT_FUZZ_SECONDS=$(RAPPORT_FUZZ_SECONDS) $(BIN)/python -m pytest tests/api/test_fuzz.py \
		-p no:cacheprovider $(PYTEST_ARGS)

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
