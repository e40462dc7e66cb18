# Two commands do everything on a fresh machine that has Python 3.11:
#   make demo   -> creates .venv, installs flowmatch, trains the default 2D model, samples, evaluates
#   make test   -> creates .venv, installs flowmatch with dev extras, runs lint and the test suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow lint bench clean setup

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/flowmatch train --out runs/demo --overwrite
	$(BIN)/flowmatch sample runs/demo --num-samples 2000 --solver midpoint --nfe 8 --out runs/demo/samples_nfe8.png
	$(BIN)/flowmatch eval runs/demo --nfe 1,2,4,8,16

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src/flowmatch

test: $(STAMP) lint
	$(BIN)/python -m pytest

# The long fault-injection tests (20 kill -9 / resume cycles, stopped DDP ranks, ...).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

bench: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[bench]"
	$(BIN)/python -m pip install -q --no-deps torchcfm
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache
