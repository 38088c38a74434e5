# The contract's commands. Each target creates .venv when missing and reinstalls
# whenever pyproject.toml changes (the stamp file is older than it).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo stop test lint bench

run: $(STAMP)
	$(BIN)/matchops run

demo: $(STAMP)
	$(BIN)/matchops demo

# A `make run` / `make demo` in another shell, then the embedded servers.
stop: $(STAMP)
	$(BIN)/matchops stop

# Against DATABASE_URL / BROKER_URL / RESULT_BACKEND when set, else embedded servers.
test: $(STAMP)
	$(BIN)/pytest tests/

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

bench: $(STAMP)
	$(BIN)/python -m runtime.benches

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)
