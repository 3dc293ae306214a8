# `make bench` and `make test` each create .venv when it is missing, install the project, and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: bench test install lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

bench: $(STAMP)
	$(BIN)/lssl bench

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile --timeout=600 --durations=15

lint: $(STAMP)
	$(BIN)/ruff format --check lightning_ssl datamodules tests benchmarks examples
	$(BIN)/ruff check lightning_ssl datamodules tests benchmarks examples

clean:
	rm -rf $(VENV) lightning_logs .pytest_cache
