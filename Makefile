# The contract's commands. Each target creates .venv when missing and reinstalls whenever
# pyproject.toml or the lock file changes (the stamp file is older than them).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Exact versions with hashes: everything `make run` / `make test` need (the `local` and
# `dev` extras included). requirements/prod.lock is the production image's share.
LOCK := requirements/dev.lock
PIP_COMPILE := $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links

.PHONY: run demo stop test lint bench lock

run: $(STAMP)
	$(BIN)/matchops run

demo: $(STAMP)
	$(BIN)/matchops demo

# A `make run` / `make demo` in another shell, then the embedded servers.
stop: $(STAMP)
	$(BIN)/matchops stop

# Against DATABASE_URL / BROKER_URL / RESULT_BACKEND when set, else embedded servers.
# Several test processes, each with a database and a Redis db of its own (tests/isolation.py).
TEST_PROCESSES ?= 3
test: $(STAMP)
	$(BIN)/pytest -n $(TEST_PROCESSES) tests/

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

bench: $(STAMP)
	$(BIN)/python -m runtime.benches

# Re-resolve the newest versions pyproject.toml allows; commit both files. The production
# lock starts as a copy of the full one: pip-compile keeps the pins it finds in its output
# file and drops the ones production does not need, so both agree on every version.
lock: $(STAMP)
	$(PIP_COMPILE) --upgrade --extra local --extra dev -o requirements/dev.lock pyproject.toml
	cp requirements/dev.lock requirements/prod.lock
	$(PIP_COMPILE) -o requirements/prod.lock pyproject.toml

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)
