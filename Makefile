# `make demo` and `make test` work on a fresh machine: they create .venv and install
# the project the first time (and again whenever pyproject.toml changes).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The CPU build of PyTorch; set TORCH_SPEC to pick another build (see README).
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= demo

.PHONY: venv demo test lint format bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/infnet demo --out $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/prepare.py --cases kuairand,synthetic-1m
	$(BIN)/python benchmarks/loader.py
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/metrics.py
	$(BIN)/python benchmarks/scaling.py
	$(BIN)/python benchmarks/serving.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
