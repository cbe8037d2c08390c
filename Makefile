# Two commands from a fresh clone: `make run` and `make test`. Both create .venv/ and install
# everything the project needs from its own files first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/alemwatch dev-setup --patients 200
	$(BIN)/alemwatch serve --host 127.0.0.1 --port 8000

test: $(STAMP)
	$(BIN)/alemwatch protocol check
	$(BIN)/pytest -q

check: $(STAMP)
	$(BIN)/ruff check alemwatch tests bench
	$(BIN)/ruff format --check alemwatch tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/assess_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
